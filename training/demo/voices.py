"""The demo corpus's voices: engine, Debian package, licence, the person behind it, and split.

`person` groups voices that are the same human speaker in different engines (slt in flite and
festival HTS; kal in flite and festival diphones). Splits are assigned per person, so no person
is ever both in the base model's training data and held out from it.

Held-out persons: rms (flite only) and ked (festival only), the two clean voices whose speakers
exist in no other engine here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "heldout"]
Engine = Literal["flite", "festival", "espeak-ng", "rhvoice"]
Archive = Literal["main", "contrib", "non-free"]

# Licence texts summarised; the full texts are the Debian copyright files named here.
_FLITE_LICENCE = "CMU Flite licence (BSD-style: use, modify, redistribute and sell, keeping the notice)"
_FLITE_COPYRIGHT = "/usr/share/doc/libflite1/copyright"
_FESTVOX_LICENCE = "Festvox voice licence (BSD-style, CMU / University of Edinburgh: use, modify, redistribute and sell, keeping the notice)"
_SLT_HTS_LICENCE = "EST-2003 (BSD-style, CMU) and BSD-3-Clause (HTS parts)"
_ESPEAK_LICENCE = "GPL-3.0-or-later (espeak-ng and its voice data)"
_RHVOICE_LICENCE = (
    "LGPL-2.1-or-later (per Debian's copyright file; shipped in Debian non-free because the trained"
    " voice models cannot be rebuilt from source)"
)


@dataclass(frozen=True)
class VoiceSpec:
    """One voice of the demo corpus."""

    voice_id: str  # the speaker name in the .list files
    engine: Engine
    engine_voice: str  # the engine's own voice name
    lang: str
    person: str  # the human (or synthetic source) behind the voice; splits are per person
    split: Split
    packages: tuple[str, ...]  # Debian packages that provide the engine and the voice
    archive: Archive
    licence: str
    copyright_file: str
    gender: str
    accent: str
    pitch_cents: int = 0  # sox pitch shift applied on top of the engine voice
    note: str = ""

    @property
    def extra(self) -> bool:
        """True for voices from outside Debian main (only built with --extra-voices)."""
        return self.archive != "main"

    @property
    def base_key(self) -> tuple[str, str, str]:
        """Voices with the same key share the engine's raw audio (pitch variants reuse it)."""
        return (self.engine, self.engine_voice, self.lang)


def _pitch_variant(base: VoiceSpec, cents: int) -> VoiceSpec:
    sign = "p" if cents > 0 else "m"
    return VoiceSpec(
        voice_id=f"{base.voice_id}_{sign}{abs(cents)}",
        engine=base.engine,
        engine_voice=base.engine_voice,
        lang=base.lang,
        person=base.person,
        split=base.split,
        packages=(*base.packages, "sox"),
        archive=base.archive,
        licence=base.licence,
        copyright_file=base.copyright_file,
        gender=base.gender,
        accent=base.accent,
        pitch_cents=cents,
        note=(
            f"{base.voice_id} shifted {cents:+d} cents with sox (formants move too): a distinct speaker to a"
            " d-vector verifier, but the same person for splitting"
        ),
    )


_FLITE_AWB = VoiceSpec(
    "flite_awb", "flite", "awb", "en", "awb", "train", ("flite", "libflite1"), "main",
    _FLITE_LICENCE, _FLITE_COPYRIGHT, "male", "Scottish English", note="CMU ARCTIC awb, clustergen",
)  # fmt: skip
_FLITE_RMS = VoiceSpec(
    "flite_rms", "flite", "rms", "en", "rms", "heldout", ("flite", "libflite1"), "main",
    _FLITE_LICENCE, _FLITE_COPYRIGHT, "male", "US English", note="CMU ARCTIC rms, clustergen",
)  # fmt: skip
_FLITE_SLT = VoiceSpec(
    "flite_slt", "flite", "slt", "en", "slt", "train", ("flite", "libflite1"), "main",
    _FLITE_LICENCE, _FLITE_COPYRIGHT, "female", "US English", note="CMU ARCTIC slt, clustergen",
)  # fmt: skip
_FLITE_KAL = VoiceSpec(
    "flite_kal16", "flite", "kal16", "en", "kal", "train", ("flite", "libflite1"), "main",
    _FLITE_LICENCE, _FLITE_COPYRIGHT, "male", "US English", note="kal diphones, 16 kHz",
)  # fmt: skip
_FEST_KAL = VoiceSpec(
    "festival_kal", "festival", "kal_diphone", "en", "kal", "train", ("festival", "festvox-kallpc16k"), "main",
    _FESTVOX_LICENCE, "/usr/share/doc/festvox-kallpc16k/copyright", "male", "US English",
    note="same speaker as flite kal16",
)  # fmt: skip
_FEST_KED = VoiceSpec(
    "festival_ked", "festival", "ked_diphone", "en", "ked", "heldout", ("festival", "festvox-kdlpc16k"), "main",
    _FESTVOX_LICENCE, "/usr/share/doc/festvox-kdlpc16k/copyright", "male", "US English",
)  # fmt: skip
_FEST_SLT = VoiceSpec(
    "festival_slt_hts", "festival", "cmu_us_slt_arctic_hts", "en", "slt", "train",
    ("festival", "festvox-us-slt-hts"), "main", _SLT_HTS_LICENCE, "/usr/share/doc/festvox-us-slt-hts/copyright",
    "female", "US English", note="same speaker as flite slt; HTS, 32 kHz native",
)  # fmt: skip
_ESPEAK_CMN = VoiceSpec(
    "espeak_cmn", "espeak-ng", "cmn-latn-pinyin", "zh", "espeak", "train", ("espeak-ng", "espeak-ng-data"), "main",
    _ESPEAK_LICENCE, "/usr/share/doc/espeak-ng-data/copyright", "male", "Mandarin (formant synthesis)",
    note="fed pypinyin TONE3 pinyin with punctuation kept (the plain cmn voice misreads tone digits)",
)  # fmt: skip
_ESPEAK_CMN_F3 = VoiceSpec(
    "espeak_cmn_f3", "espeak-ng", "cmn-latn-pinyin+f3", "zh", "espeak", "train", ("espeak-ng", "espeak-ng-data"),
    "main", _ESPEAK_LICENCE, "/usr/share/doc/espeak-ng-data/copyright", "female", "Mandarin (formant synthesis)",
    note="espeak-ng female variant f3 of the same formant voice; grouped with espeak_cmn",
)  # fmt: skip

_RH_ALAN = VoiceSpec(
    "rhvoice_alan", "rhvoice", "alan", "en", "awb", "train", ("rhvoice", "rhvoice-english"), "non-free",
    _RHVOICE_LICENCE, "/usr/share/doc/rhvoice-english/copyright", "male", "Scottish English",
    note="Scottish male voice built from CMU ARCTIC data; grouped with awb so the two can never straddle splits",
)  # fmt: skip
_RH_BDL = VoiceSpec(
    "rhvoice_bdl", "rhvoice", "bdl", "en", "bdl", "train", ("rhvoice", "rhvoice-english"), "non-free",
    _RHVOICE_LICENCE, "/usr/share/doc/rhvoice-english/copyright", "male", "US English", note="CMU ARCTIC bdl",
)  # fmt: skip
_RH_CLB = VoiceSpec(
    "rhvoice_clb", "rhvoice", "clb", "en", "clb", "train", ("rhvoice", "rhvoice-english"), "non-free",
    _RHVOICE_LICENCE, "/usr/share/doc/rhvoice-english/copyright", "female", "US English", note="CMU ARCTIC clb",
)  # fmt: skip

DEFAULT_VOICES: tuple[VoiceSpec, ...] = (
    _FLITE_AWB,
    _FLITE_RMS,
    _FLITE_SLT,
    _FLITE_KAL,
    _FEST_KAL,
    _FEST_KED,
    _FEST_SLT,
    _pitch_variant(_FLITE_AWB, 200),
    _pitch_variant(_FLITE_AWB, -200),
    _pitch_variant(_FEST_KAL, 200),
    _pitch_variant(_FEST_SLT, -200),
    _ESPEAK_CMN,
    _ESPEAK_CMN_F3,
)
EXTRA_VOICES: tuple[VoiceSpec, ...] = (_RH_ALAN, _RH_BDL, _RH_CLB)
ALL_VOICES: tuple[VoiceSpec, ...] = DEFAULT_VOICES + EXTRA_VOICES


def voice_by_id(voice_id: str) -> VoiceSpec:
    for v in ALL_VOICES:
        if v.voice_id == voice_id:
            return v
    known = ", ".join(v.voice_id for v in ALL_VOICES)
    raise ValueError(f"unknown demo voice {voice_id!r}; known voices: {known}")


def select_voices(voice_ids: list[str] | None, *, extra_voices: bool) -> list[VoiceSpec]:
    """The voices to build: all defaults (plus extras when asked), or the named subset in catalogue order."""
    if voice_ids is None:
        return list(DEFAULT_VOICES + (EXTRA_VOICES if extra_voices else ()))
    wanted = {voice_by_id(v).voice_id for v in voice_ids}
    chosen = [v for v in ALL_VOICES if v.voice_id in wanted]
    blocked = [v.voice_id for v in chosen if v.extra and not extra_voices]
    if blocked:
        raise ValueError(
            f"voice(s) {', '.join(blocked)} come from Debian contrib/non-free; pass --extra-voices to use them"
        )
    if not chosen:
        raise ValueError("no voices selected")
    return chosen


def check_person_splits(voices: list[VoiceSpec]) -> None:
    """Raise ValueError if any person has voices in both the train and the held-out split."""
    splits: dict[str, set[str]] = {}
    for v in voices:
        splits.setdefault(v.person, set()).add(v.split)
    mixed = sorted(p for p, s in splits.items() if len(s) > 1)
    if mixed:
        raise ValueError(f"person(s) {', '.join(mixed)} would span train and held-out splits")
