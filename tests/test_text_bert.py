"""BERT features: phone alignment, windows, and the frontend's use of them (tiny random model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from tritone.models.bert import BERT_DIM, BertFeatures
from tritone.text import TextFrontend

CHARS = "你好世界我们去银行吧今天天气很"


def _save_tiny_bert(path: Path, max_positions: int = 64) -> Path:
    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "!", "?", *CHARS]
    (path / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=BERT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=max_positions,
    )
    BertModel(config).eval().save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def bert(bert_dir: Path) -> BertFeatures:
    return BertFeatures.from_dir(bert_dir)


def test_features_repeat_each_character_per_phone(bert: BertFeatures) -> None:
    feats = bert.features("你好,世界", [2, 2, 1, 2, 2])
    assert feats.shape == (BERT_DIM, 9) and feats.dtype == np.float32
    per_char = bert.char_features("你好,世界")
    assert per_char.shape == (5, BERT_DIM)
    np.testing.assert_array_equal(feats[:, 0], feats[:, 1])
    np.testing.assert_array_equal(feats[:, 0], per_char[0])
    np.testing.assert_array_equal(feats[:, 4], per_char[2])  # the comma, one phone
    assert not np.allclose(per_char[0], per_char[1])


def test_third_from_last_hidden_layer_without_cls_sep(bert: BertFeatures) -> None:
    tok = bert.tokenizer
    ids = tok.convert_tokens_to_ids(["[CLS]", "你", "好", "[SEP]"])
    with torch.no_grad():
        out = bert.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    expected = out.hidden_states[-3][0, 1:-1].numpy()
    np.testing.assert_allclose(bert.char_features("你好"), expected, atol=1e-5)


def test_unknown_character_still_aligns(bert: BertFeatures) -> None:
    assert bert.features("你龘好", [2, 2, 2]).shape == (BERT_DIM, 6)


def test_long_text_is_encoded_in_windows(bert: BertFeatures) -> None:
    small = BertFeatures(bert.model, bert.tokenizer)
    assert small.window == 62  # 64 positions less [CLS] and [SEP]
    small.window = 6
    text = CHARS[:14]
    feats = small.char_features(text)
    assert feats.shape == (14, BERT_DIM)
    np.testing.assert_allclose(feats[6:12], small.char_features(text[6:12]), atol=1e-5)


def test_word2ph_length_must_match(bert: BertFeatures) -> None:
    with pytest.raises(ValueError, match="word2ph"):
        bert.features("你好", [2])


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BertFeatures.from_dir(tmp_path / "nope")


def test_frontend_uses_bert_for_chinese_runs_only(bert_dir: Path) -> None:
    fe = TextFrontend(bert_dir=bert_dir)
    assert fe.bert is not None
    seq = fe.process("我们去银行吧,OK?", "auto")
    zh_phones = sum(seq.word2ph[:7])  # 我们去银行吧 + ","
    assert seq.bert.shape == (BERT_DIM, len(seq.phones))
    assert np.abs(seq.bert[:, :zh_phones]).sum(axis=0).min() > 0
    assert not seq.bert[:, zh_phones:].any()  # the English run is zeros
    np.testing.assert_array_equal(seq.bert[:, :zh_phones], fe.bert.features("我们去银行吧,", seq.word2ph[:7]))

    en = fe.process("Hello there, world.", "en")
    assert en.bert.shape == (BERT_DIM, len(en.phones)) and not en.bert.any()


def test_frontend_without_bert_gives_zeros() -> None:
    seq = TextFrontend().process("今天天气很好。", "zh")
    assert seq.bert.shape == (BERT_DIM, len(seq.phones)) and not seq.bert.any()
