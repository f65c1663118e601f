"""The adapter trainer's default target groups are modules the serving runtime's adapter bank
holds: an adapter outside them registers, then the Triton bank refuses it at the first request.
Every group the trainer offers is one the bank holds."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("preset", ["tiny", "demo-spectral", "tiny-spectral"])
def test_default_adapter_targets_fit_the_serving_bank(preset: str) -> None:
    from training.train_adapter import DEFAULT_TARGETS, target_modules
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.serving import runtime
    from tritone.serving.runtime_graphs import lora_target_names

    model = BaseModel.random(BaseModelConfig.preset(preset), seed=0)
    trained = target_modules(model, DEFAULT_TARGETS)
    served = set(lora_target_names(model, runtime.DEFAULT_TARGETS))
    assert trained, "no target modules"
    assert set(trained) <= served, sorted(set(trained) - served)[:8]
    assert {n.split(".")[0] for n in trained} == {"gpt", "sovits", "vocoder"}
    # every SoVITS part that carries timbre, the reference encoder included (its `ge` is computed
    # with the voice's slot when the voice is loaded)
    assert {n.split(".")[1] for n in trained if n.startswith("sovits.")} == {"ref_enc", "enc_p", "flow"}
    # the spectral generator's body, where the voice's spectral envelope is made
    assert ("vocoder.head" in trained) == preset.endswith("spectral")


def test_every_trainable_group_is_served() -> None:
    from training.train_adapter import TARGET_GROUPS, target_modules
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.serving import runtime
    from tritone.serving.runtime_graphs import lora_target_names

    model = BaseModel.random(BaseModelConfig.preset("tiny-spectral"), seed=0)  # has every group
    served = set(lora_target_names(model, runtime.DEFAULT_TARGETS))
    for group in TARGET_GROUPS:
        trained = target_modules(model, [group])
        assert trained and set(trained) <= served, (group, sorted(set(trained) - served)[:8])


@pytest.mark.parametrize("preset", ["tiny-spectral", "demo-spectral"])
def test_served_patterns_name_only_layers_that_take_a_lora(preset: str) -> None:
    """Tools that build adapters straight from the patterns (random voices in tests, load
    tests) must not meet an activation or a norm among the matches."""
    from torch import nn

    from tritone.lora import match_modules
    from tritone.models.base import BaseModel, BaseModelConfig
    from tritone.serving import runtime

    model = BaseModel.random(BaseModelConfig.preset(preset), seed=0)
    for pattern in runtime.DEFAULT_TARGETS:
        names = match_modules(model, pattern)
        assert names, pattern
        others = [n for n in names if not isinstance(model.get_submodule(n), nn.Linear | nn.Conv1d)]
        assert not others, (pattern, others[:4])


def test_groups_a_base_lacks_are_a_clear_error() -> None:
    from training.train_adapter import target_modules
    from tritone.models.base import BaseModel, BaseModelConfig

    hifigan = BaseModel.random(BaseModelConfig.tiny(), seed=0)
    with pytest.raises(ValueError, match="vocoder_body exists only in a spectral generator"):
        target_modules(hifigan, ["vocoder_body"])
    with pytest.raises(ValueError, match="unknown target groups"):
        target_modules(hifigan, ["timbre"])
    assert target_modules(hifigan, ["vocoder", "vocoder_body"]) == ["vocoder.conv_pre", "vocoder.cond"]
