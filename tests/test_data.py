"""Corpus ingest: .list parsing and validation, folder layouts, the `tritone data validate` command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training import cli as data_cli
from training.data import (
    Utterance,
    load_dataset,
    normalize_language,
    read_folder,
    read_list,
    resample,
    write_list,
)


def _wav(path: Path, seconds: float = 1.5, sr: int = 32_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 220 * t), sr, subtype="PCM_16")
    return path


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tritone")
    data_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_good_list_parses_with_relative_absolute_paths_and_v1_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "corpus"
    _wav(corpus / "wavs" / "a.wav")
    _wav(corpus / "wavs" / "b.wav")
    absolute = _wav(tmp_path / "elsewhere" / "c.wav")
    _wav(corpus / "wavs" / "d.wav")
    lst = corpus / "train.list"
    lst.write_text(
        "# comment line\n"
        "wavs/a.wav|alice|en|Hello there.\n"
        "\n"
        "wavs/b.wav|alice|ZH|你好。\n"
        f"{absolute}|bob|JP|こんにちは\r\n"
        "wavs/d.wav|bob|yue|text with a | pipe inside\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # relative paths must resolve against the list's folder, not the cwd
    ds = read_list(lst)
    assert ds.ok, ds.issues
    assert [u.utt_id for u in ds.utterances] == ["a", "b", "c", "d"]
    assert [u.lang for u in ds.utterances] == ["en", "zh", "ja", "yue"]
    assert ds.utterances[0].wav_path == corpus.resolve() / "wavs" / "a.wav"
    assert ds.utterances[2].wav_path == absolute
    assert ds.utterances[3].text == "text with a | pipe inside"
    assert ds.utterances[1].source.endswith("train.list:4")
    assert ds.speakers() == {"alice": 2, "bob": 2}


def test_every_kind_of_bad_line_is_reported_with_its_line_number(tmp_path: Path) -> None:
    _wav(tmp_path / "ok1.wav")
    _wav(tmp_path / "ok2.wav")
    _wav(tmp_path / "sub" / "ok1.wav")  # same file name as line 1: duplicate id
    (tmp_path / "notaudio.wav").write_text("this is not audio", encoding="utf-8")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0), 16_000)
    lst = tmp_path / "bad.list"
    lst.write_text(
        "ok1.wav|spk|en|First good line.\n"  # 1
        "ok2.wav|spk|en\n"  # 2 too few fields
        "ok2.wav|spk|en|   \n"  # 3 empty text
        "ok2.wav|spk|fr|Bonjour.\n"  # 4 unknown language
        "missing.wav|spk|en|Where is it?\n"  # 5 missing file
        "notaudio.wav|spk|en|Not audio.\n"  # 6 unreadable audio
        "sub/ok1.wav|spk|en|Duplicate name.\n"  # 7 duplicate utterance id
        "ok2.wav||en|No speaker.\n"  # 8 empty speaker
        "empty.wav|spk|en|No samples.\n"  # 9 zero-length audio
        "ok2.wav|spk|EN|Second good line.\n",  # 10
        encoding="utf-8",
    )
    ds = read_list(lst)
    found = {(i.line, i.code) for i in ds.errors}
    assert found == {
        (2, "bad_format"),
        (3, "empty_text"),
        (4, "bad_language"),
        (5, "missing_file"),
        (6, "bad_audio"),
        (7, "duplicate_id"),
        (8, "empty_speaker"),
        (9, "bad_audio"),
    }
    assert all(i.source == str(lst) for i in ds.errors)
    assert "'fr'" in next(i.message for i in ds.errors if i.code == "bad_language")
    assert f"{lst}:1" in next(i.message for i in ds.errors if i.code == "duplicate_id")  # names the first use
    assert "bad.list:5" in str(next(i for i in ds.errors if i.code == "missing_file"))
    # Reading goes on past bad lines: both good lines are kept.
    assert [u.text for u in ds.utterances] == ["First good line.", "Second good line."]
    assert not ds.ok
    with pytest.raises(ValueError, match="8 problem"):
        ds.raise_if_errors()


def test_list_without_audio_check_and_unreadable_list(tmp_path: Path) -> None:
    lst = tmp_path / "x.list"
    lst.write_text("nothing.wav|spk|en|Hi.\n", encoding="utf-8")
    assert read_list(lst, check_files=False).ok
    assert read_list(lst).errors[0].code == "missing_file"
    assert read_list(tmp_path / "absent.list").errors[0].code == "unreadable_list"
    (tmp_path / "latin1.list").write_bytes("a.wav|spk|en|caf\xe9\n".encode("latin-1"))
    assert read_list(tmp_path / "latin1.list").errors[0].code == "bad_encoding"


def test_language_codes() -> None:
    assert [normalize_language(c) for c in ("zh", "ja", "en", "ko", "yue")] == ["zh", "ja", "en", "ko", "yue"]
    assert [normalize_language(c) for c in ("ZH", "JP", "JA", "EN", "KO", "YUE")] == [
        "zh",
        "ja",
        "ja",
        "en",
        "ko",
        "yue",
    ]
    assert normalize_language("Zh") is None
    assert normalize_language("jp") is None  # only the v1 upper-case code is mapped
    assert normalize_language("de") is None


def test_folder_with_sidecar_transcripts(tmp_path: Path) -> None:
    voice = tmp_path / "maria"
    _wav(voice / "one.wav")
    (voice / "one.txt").write_text("The first clip.\n", encoding="utf-8")
    _wav(voice / "two.wav")
    (voice / "two.lab").write_text("你好，世界。", encoding="utf-8")
    _wav(voice / "three.wav")  # no transcript
    (voice / "orphan.txt").write_text("No audio for me.", encoding="utf-8")
    ds = read_folder(voice)
    assert [(u.utt_id, u.speaker, u.lang) for u in ds.utterances] == [
        ("one", "maria", "en"),
        ("two", "maria", "zh"),
    ]
    assert {(Path(i.source).name, i.code) for i in ds.errors} == {
        ("three.wav", "missing_transcript"),
        ("orphan.txt", "missing_file"),
    }
    forced = read_folder(voice, speaker="m1", lang="EN")
    assert {u.speaker for u in forced.utterances} == {"m1"}
    assert {u.lang for u in forced.utterances} == {"en"}
    assert read_folder(voice, lang="xx").errors[0].code == "bad_language"


def test_folder_with_metadata_csv_and_speaker_subfolders(tmp_path: Path) -> None:
    lj = tmp_path / "root" / "lj"
    _wav(lj / "wavs" / "LJ001.wav")
    _wav(lj / "wavs" / "LJ002.wav")
    (lj / "metadata.csv").write_text(
        "LJ001|Chapter 1 begins.|Chapter one begins.\nLJ002|Second clip.\nLJ003|Missing audio.\nLJ004|\n",
        encoding="utf-8",
    )
    tsv = tmp_path / "root" / "ken"
    _wav(tsv / "k1.flac")
    (tsv / "transcripts.tsv").write_text("k1.flac\tA flac clip.\nk2\tNot there.\n", encoding="utf-8")
    (tmp_path / "root" / "empty_dir").mkdir()
    ds = load_dataset(tmp_path / "root")
    assert [(u.utt_id, u.speaker, u.text) for u in ds.utterances] == [
        ("k1", "ken", "A flac clip."),
        ("LJ001", "lj", "Chapter one begins."),  # the normalised third column wins
        ("LJ002", "lj", "Second clip."),
    ]
    assert {(Path(i.source).name, i.line, i.code) for i in ds.errors} == {
        ("transcripts.tsv", 2, "missing_file"),
        ("metadata.csv", 3, "missing_file"),
        ("metadata.csv", 4, "empty_text"),
    }
    assert read_folder(tmp_path / "root" / "empty_dir").errors[0].code == "no_clips"


def test_write_list_round_trip_is_relative_and_lossless(tmp_path: Path) -> None:
    utts = [
        Utterance("a", _wav(tmp_path / "w" / "a.wav"), "s1", "en", "Hello, world."),
        Utterance("b", _wav(tmp_path / "w" / "b.wav"), "s2", "zh", "你好。"),
    ]
    out = write_list(utts, tmp_path / "out.list")
    assert out.read_text(encoding="utf-8").splitlines()[0] == "w/a.wav|s1|en|Hello, world."
    back = read_list(out)
    assert back.ok
    assert [(u.utt_id, u.wav_path, u.speaker, u.lang, u.text) for u in back.utterances] == [
        (u.utt_id, u.wav_path.resolve(), u.speaker, u.lang, u.text) for u in utts
    ]


def test_resample_keeps_duration_and_tone() -> None:
    sr = 22_050
    t = np.arange(sr) / sr
    y = resample(np.sin(2 * np.pi * 440 * t), sr, 32_000)
    assert len(y) == 32_000
    peak_bin = int(np.argmax(np.abs(np.fft.rfft(y))))
    assert abs(peak_bin - 440) <= 1


def test_cli_validate_reports_and_exits_nonzero_on_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _wav(tmp_path / "a.wav")
    good = tmp_path / "good.list"
    good.write_text("a.wav|spk|en|Fine.\n", encoding="utf-8")
    bad = tmp_path / "bad.list"
    bad.write_text("a.wav|spk|en|Fine.\nb.wav|spk|en|Gone.\n", encoding="utf-8")
    assert _run_cli(["data", "validate", str(good)]) == 0
    assert _run_cli(["data", "validate", str(bad), "--json", str(tmp_path / "issues.json")]) == 1
    err = capsys.readouterr().err
    assert "bad.list:2" in err and "missing_file" in err
    assert '"missing_file"' in (tmp_path / "issues.json").read_text(encoding="utf-8")
    folder = tmp_path / "clips"
    _wav(folder / "x.wav")
    (folder / "x.txt").write_text("Folder clip.", encoding="utf-8")
    assert (
        _run_cli(["data", "validate", str(folder), "--lang", "en", "--write-list", str(tmp_path / "f.list")])
        == 0
    )
    assert (tmp_path / "f.list").read_text(encoding="utf-8") == "clips/x.wav|clips|en|Folder clip.\n"
