"""Chinese BERT features aligned to phones, as GPT-SoVITS feeds its GPT.

Upstream uses chinese-roberta-wwm-ext-large: the third-from-last hidden layer (1024-d),
without the [CLS]/[SEP] positions, one vector per character, each repeated once per phone
of that character (`word2ph`), giving [1024, n_phones]. Non-Chinese text gets zeros (the
frontend does that; this module only sees Chinese runs).

Each character is tokenised on its own so tokens and characters always line up one to
one (a character the vocabulary lacks becomes [UNK]). Text longer than the model's
position table is encoded in consecutive windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel, PreTrainedTokenizerBase

BERT_DIM = 1024
# hidden_states[-3]: two layers below the top, as upstream reads it.
HIDDEN_LAYER = -3


class BertFeatures:
    """A local HF BertModel + tokenizer producing phone-aligned features [1024, n_phones]."""

    def __init__(self, model: BertModel, tokenizer: PreTrainedTokenizerBase, device: str = "cpu") -> None:
        config = model.config
        if config.hidden_size != BERT_DIM:
            raise ValueError(
                f"BERT hidden size must be {BERT_DIM} (the GPT's bert_proj input), got {config.hidden_size}"
            )
        if config.num_hidden_layers < -HIDDEN_LAYER - 1:
            raise ValueError(
                f"BERT needs at least {-HIDDEN_LAYER - 1} layers to read hidden_states[{HIDDEN_LAYER}]"
            )
        self.model = model
        self.model.eval()
        torch.nn.Module.to(self.model, device)
        self.tokenizer = tokenizer
        self.device = device
        # Room for [CLS] and [SEP] in each window.
        self.window = int(config.max_position_embeddings) - 2

    @classmethod
    def from_dir(cls, path: str | Path, device: str = "cpu") -> BertFeatures:
        """Load model and tokenizer from a local directory; never downloads."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"BERT directory not found: {path}")
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = BertModel.from_pretrained(str(path), local_files_only=True)
        return cls(model, tokenizer, device)

    def _char_ids(self, text: str) -> list[int]:
        unk = self.tokenizer.unk_token_id
        ids: list[int] = []
        for ch in text:
            pieces = self.tokenizer.tokenize(ch)
            first = self.tokenizer.convert_tokens_to_ids(pieces[0]) if pieces else unk
            ids.append(first if isinstance(first, int) else unk)
        return ids

    @torch.inference_mode()
    def _encode(self, ids: list[int]) -> torch.Tensor:
        """Per-character vectors [len(ids), 1024] for one window."""
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        input_ids = torch.tensor([[cls_id, *ids, sep_id]], dtype=torch.long, device=self.device)
        out = self.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            token_type_ids=torch.zeros_like(input_ids),
            output_hidden_states=True,
        )
        return out.hidden_states[HIDDEN_LAYER][0, 1:-1].float().cpu()

    def char_features(self, text: str) -> np.ndarray:
        """One vector per character: float32 [len(text), 1024]."""
        ids = self._char_ids(text)
        if not ids:
            return np.zeros((0, BERT_DIM), dtype=np.float32)
        chunks = [self._encode(ids[i : i + self.window]) for i in range(0, len(ids), self.window)]
        return torch.cat(chunks, dim=0).numpy().astype(np.float32)

    def features(self, text: str, word2ph: list[int]) -> np.ndarray:
        """Phone-aligned features float32 [1024, sum(word2ph)]; word2ph has one count per character."""
        if len(word2ph) != len(text):
            raise ValueError(f"word2ph has {len(word2ph)} entries for {len(text)} characters")
        per_char = self.char_features(text)
        repeated = np.repeat(per_char, np.asarray(word2ph, dtype=np.int64), axis=0)
        return np.ascontiguousarray(repeated.T, dtype=np.float32)
