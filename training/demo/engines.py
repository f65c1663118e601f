"""Run the Debian speech synthesisers (flite, festival, espeak-ng, RHVoice) and sox.

Every call uses an argument list (never a shell string); text goes in as an argument or on
stdin. `check_dependencies` finds every missing binary or voice up front and names the Debian
packages to install.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pypinyin import Style, lazy_pinyin

from training.demo.voices import VoiceSpec

FESTIVAL_VOICE_ROOTS: tuple[Path, ...] = (
    Path("/usr/share/festival/voices"),
    Path("/usr/lib/festival/voices"),
)
RHVOICE_VOICE_ROOT = Path("/usr/share/RHVoice/voices")

_BINARIES: dict[str, tuple[str, str]] = {  # engine -> (binary, Debian package)
    "flite": ("flite", "flite"),
    "festival": ("festival", "festival"),
    "espeak-ng": ("espeak-ng", "espeak-ng"),
    "rhvoice": ("RHVoice-test", "rhvoice"),
}

# Chinese punctuation → ASCII for espeak-ng (kept so phrasing and sandhi stop at clause ends).
_ZH_PUNCT = {
    "，": ",", "、": ",", "；": ";", "：": ":", "。": ".", "！": "!", "？": "?",
    ",": ",", ";": ";", ":": ":", ".": ".", "!": "!", "?": "?",
}  # fmt: skip


class MissingDependencyError(FileNotFoundError):
    """A synthesiser, voice or tool the demo corpus needs is not installed."""


class SynthesisError(RuntimeError):
    """A synthesiser ran but produced no usable audio."""


def _festival_voice_installed(name: str) -> bool:
    return any(root.is_dir() and any(root.glob(f"*/{name}")) for root in FESTIVAL_VOICE_ROOTS)


def _flite_voices() -> set[str]:
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    return set(out.replace("Voices available:", "").split())


def check_dependencies(voices: Sequence[VoiceSpec]) -> None:
    """Raise MissingDependencyError naming every Debian package missing for `voices`."""
    missing: list[str] = []

    def need(package: str) -> None:
        if package not in missing:
            missing.append(package)

    for v in voices:
        binary, package = _BINARIES[v.engine]
        if shutil.which(binary) is None:
            need(package)
            continue
        if v.engine == "festival" and not _festival_voice_installed(v.engine_voice):
            need(v.packages[1])
        elif v.engine == "flite" and v.engine_voice not in _flite_voices():
            need("flite")
        elif v.engine == "rhvoice" and not (RHVOICE_VOICE_ROOT / v.engine_voice).is_dir():
            need("rhvoice-english")
    if any(v.pitch_cents for v in voices) and shutil.which("sox") is None:
        need("sox")
    if missing:
        extra = [p for p in missing if p.startswith("rhvoice")]
        hint = (
            " (rhvoice and rhvoice-english are in Debian non-free: add the contrib/non-free components to"
            " apt's sources first, see docs/DATA.md)"
            if extra
            else ""
        )
        raise MissingDependencyError(
            f"missing Debian package(s) for the demo corpus: {', '.join(missing)}; install with: "
            f"apt-get install {' '.join(missing)}{hint}"
        )


def _run(cmd: list[str], *, stdin: str | None = None, timeout: float = 300.0) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SynthesisError(f"{cmd[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")


def _check_output(path: Path, engine: str) -> None:
    if not path.is_file() or path.stat().st_size <= 44:  # 44 bytes: an empty WAV header
        raise SynthesisError(f"{engine} produced no audio for {path.name}")


def pinyin_for_espeak(text: str) -> str:
    """Hanzi → space-separated TONE3 pinyin (`ni3 hao3, shi4 jie4.`) with punctuation kept.

    espeak-ng's `cmn-latn-pinyin` voice reads this correctly (tone letters and 3-3 sandhi);
    the plain `cmn` voice reads tone digits as English numbers. Characters pypinyin cannot
    convert (Latin letters, digits, symbols) are dropped, so feed it hanzi-only text.
    """
    tokens: list[str] = []
    for item in lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True):
        if item and item[-1] in "12345" and item[:-1].isalpha():
            tokens.append(item)
            continue
        for ch in item:
            mark = _ZH_PUNCT.get(ch)
            if mark and tokens and tokens[-1][-1] not in ",;:.!?":
                tokens[-1] += mark
    return " ".join(tokens)


def synth_one(voice: VoiceSpec, text: str, out_wav: Path) -> None:
    """Synthesise `text` with the engine voice of `voice` (no pitch shift) into `out_wav`."""
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    if voice.engine == "flite":
        _run(["flite", "-voice", voice.engine_voice, "-t", text, "-o", str(out_wav)])
    elif voice.engine == "espeak-ng":
        spoken = pinyin_for_espeak(text) if voice.lang == "zh" else text
        _run(["espeak-ng", "-v", voice.engine_voice, "-w", str(out_wav), "--stdin"], stdin=spoken)
    elif voice.engine == "rhvoice":
        _run(["RHVoice-test", "-p", voice.engine_voice, "-o", str(out_wav)], stdin=text)
    elif voice.engine == "festival":
        synth_festival_batch(voice, [(text, out_wav)])
        return
    else:
        raise ValueError(f"unknown engine {voice.engine!r}")
    _check_output(out_wav, voice.engine)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synth_festival_batch(
    voice: VoiceSpec, jobs: Sequence[tuple[str, Path]], scratch: Path | None = None
) -> None:
    """Synthesise many texts with one festival process (loading a voice takes about a second)."""
    if not jobs:
        return
    lines = [f"(voice_{voice.engine_voice})"]
    for text, out_wav in jobs:
        out_wav.parent.mkdir(parents=True, exist_ok=True)
        lines.append(
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) {_scheme_string(str(out_wav))} 'riff)"
        )
    script_dir = scratch or jobs[0][1].parent
    script = script_dir / f"festival_{voice.engine_voice}_{jobs[0][1].stem}.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        _run(["festival", "-b", str(script)], timeout=60.0 + 10.0 * len(jobs))
    finally:
        script.unlink(missing_ok=True)
    for _, out_wav in jobs:
        _check_output(out_wav, "festival")


def pitch_shift(in_wav: Path, out_wav: Path, cents: int) -> None:
    """Shift pitch (and formants) by `cents` with sox, keeping duration; 32-bit float output, no dither."""
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "sox",
            "-D",
            "-R",
            str(in_wav),
            "-e",
            "floating-point",
            "-b",
            "32",
            str(out_wav),
            "pitch",
            str(cents),
        ]
    )
    _check_output(out_wav, "sox")


def package_versions(packages: Sequence[str]) -> dict[str, str]:
    """Installed Debian package versions (recorded in the manifest; 'unknown' off Debian)."""
    versions: dict[str, str] = {}
    dpkg = shutil.which("dpkg-query")
    for pkg in sorted(set(packages)):
        if dpkg is None:
            versions[pkg] = "unknown"
            continue
        proc = subprocess.run([dpkg, "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False)
        versions[pkg] = (
            proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "not installed"
        )
    return versions
