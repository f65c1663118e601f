"""The token aligner (tritone/models/aligner.py): CTC forced alignment of a sentence's phones to
its semantic tokens, which SoVITS's aligned MRTE lookup reads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tritone.models.aligner import AlignerConfig, TokenAligner, fit_length, forced_align


def _one_hot_log_probs(path: list[int], classes: int) -> np.ndarray:
    lp = np.full((len(path), classes), -10.0)
    lp[np.arange(len(path)), path] = 0.0
    return lp


def test_forced_align_reads_the_phones_posteriors_not_the_blanks() -> None:
    """Each frame goes to the phone whose posterior (blank left out) the path favours: a CTC
    recogniser that spikes on each phone at its end and calls the frames before blank still
    places the boundaries where the phones' own posteriors change, and a repeated phone is two
    phones."""
    blank = 4
    probs = np.full((8, 5), 0.01)
    probs[:, blank] = 0.6  # mostly blank, as a CTC model is
    for t, phone in enumerate([0, 0, 0, 1, 1, 1, 1, 2]):
        probs[t, phone] = 0.3 if t not in (2, 6, 7) else 0.9  # the spikes at each phone's end
    lp = np.log(probs / probs.sum(1, keepdims=True))
    assert forced_align(lp, [0, 1, 2], blank).tolist() == [0, 0, 0, 1, 1, 1, 1, 2]
    # the repeat: [1, 1] is two phones, each at least a frame, split where the path likes
    index = forced_align(lp[3:7], [1, 1], blank)
    assert index[0] == 0 and index[-1] == 1 and (np.diff(index) >= 0).all()
    # a label above the blank's id is looked up in the right column
    lp_hi = np.log(np.array([[0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]]))  # blank = 1
    assert forced_align(lp_hi, [2, 3], 1).tolist() == [0, 1]


def test_forced_align_places_every_phone_in_order_whatever_the_recogniser_says() -> None:
    """A recogniser that hears only one phone still gives every phone of the sentence at least
    one frame, in order; fewer frames than phones spread them evenly instead."""
    blank, labels = 5, [3, 1, 4, 1, 0]
    lp = np.log(np.full((20, 6), 0.01))
    lp[:, 1] = np.log(0.95)
    index = forced_align(lp, labels, blank)
    assert index[0] == 0 and index[-1] == len(labels) - 1
    assert (np.diff(index) >= 0).all() and set(index.tolist()) == set(range(len(labels)))
    assert forced_align(lp[:3], labels, blank).tolist() == [0, 2, 4]
    assert forced_align(lp[:5], labels, blank).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="without phones"):
        forced_align(lp, [], blank)


def test_forced_align_of_a_prefix_may_stop_before_the_last_phone() -> None:
    """A stream's first tokens (`complete` False) say the sentence's first phones: the path ends
    where the posteriors are, not forced on through every phone; complete, it must reach the end."""
    blank, labels = 4, [0, 1, 2, 3]
    probs = np.full((6, 5), 0.02)
    for t, phone in enumerate([0, 0, 0, 1, 1, 1]):
        probs[t, phone] = 0.9
    lp = np.log(probs / probs.sum(1, keepdims=True))
    assert forced_align(lp, labels, blank, complete=False).tolist() == [0, 0, 0, 1, 1, 1]
    complete = forced_align(lp, labels, blank)
    assert complete[-1] == 3 and complete.tolist()[:3] == [0, 0, 0]
    assert forced_align(lp[:2], labels, blank, complete=False).tolist() == [0, 0]  # fewer frames than phones


def test_base_config_pairs_the_aligned_lookup_with_an_aligner() -> None:
    from tritone.models.base import BaseModelConfig

    config = BaseModelConfig.tiny().with_mrte_lookup("aligned")
    assert config.aligner is not None and config.aligner.n_codes == config.sovits.codebook_size
    assert config.aligner.n_symbols == config.sovits.n_symbols
    assert config.with_codebook_size(64).aligner.n_codes == 64  # type: ignore[union-attr]
    assert config.with_mrte_lookup("content").aligner is None
    with pytest.raises(ValueError, match="aligner"):
        dataclasses.replace(config, aligner=None)
    with pytest.raises(ValueError, match="aligner"):
        dataclasses.replace(BaseModelConfig.tiny(), aligner=config.aligner)


def test_fit_length_cuts_or_repeats_the_last_phone() -> None:
    index = torch.tensor([0, 1, 1, 2])
    assert fit_length(index, 3).tolist() == [0, 1, 1]
    assert fit_length(index, 6).tolist() == [0, 1, 1, 2, 2, 2]


def test_token_aligner_learns_where_each_phone_is_from_noisy_tokens() -> None:
    """Tokens that say their phone only loosely (each token one of three codes of its phone) and
    phones of 1-5 tokens: after a short CTC training the forced alignment finds the true phone of
    most content frames, and far more than spreading the phones evenly."""
    torch.manual_seed(0)
    n_phones, n_codes = 12, 40
    config = AlignerConfig(n_codes=n_codes, n_symbols=n_phones, stride=2, d_model=48, n_layers=3)
    codes_of = torch.stack([torch.arange(3) + 3 * p for p in range(n_phones)])  # phone p: 3p..3p+2

    def sentence(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        phones = torch.randint(0, n_phones, (7,), generator=g)
        durations = torch.randint(1, 6, (7,), generator=g)  # in tokens: phones do not last alike
        truth = torch.repeat_interleave(torch.arange(7), durations)
        codes = codes_of[phones[truth], torch.randint(0, 3, (truth.numel(),), generator=g)]
        return codes, phones, truth.repeat_interleave(2)  # truth per content frame

    g = torch.Generator().manual_seed(1)
    model = TokenAligner(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        batch = [sentence(g) for _ in range(16)]
        codes = torch.nn.utils.rnn.pad_sequence([b[0] for b in batch], batch_first=True)
        code_lens = torch.tensor([b[0].numel() for b in batch])
        phones = torch.stack([b[1] for b in batch])
        log_probs = model(codes, code_lens).transpose(0, 1)
        loss = F.ctc_loss(log_probs, phones, code_lens * 2, torch.full((16,), 7), blank=config.blank)
        opt.zero_grad()
        loss.backward()
        opt.step()
    right = even = total = 0
    for _ in range(20):
        codes, phones, truth = sentence(g)
        index = model.align(codes, phones)
        assert index.shape == truth.shape and (index.diff() >= 0).all()
        right += int((index == truth).sum())
        even += int((torch.arange(truth.numel()) * 7 // truth.numel() == truth).sum())
        total += truth.numel()
    assert right / total > 0.85, (right / total, even / total)
    assert right / total > even / total + 0.2
    # the frames asked for: more repeat the last phone
    assert model.align(codes, phones, frames=truth.numel() + 3)[-4:].tolist() == [6] * 4


def test_aligner_checkpoint_round_trips() -> None:
    model = TokenAligner(AlignerConfig(n_codes=16, n_symbols=8, d_model=16, n_layers=2))
    again = TokenAligner.from_checkpoint(model.checkpoint())
    codes = torch.randint(0, 16, (1, 10))
    torch.testing.assert_close(again(codes, torch.tensor([10])), model.eval()(codes, torch.tensor([10])))
    with pytest.raises(ValueError, match="kernel_size"):
        AlignerConfig(kernel_size=4)
