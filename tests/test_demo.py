"""The bundled demo corpus: a tiny real build (flite, festival, espeak-ng, sox), determinism, splits."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training import cli as data_cli
from training.data import read_list
from training.demo import (
    DEFAULT_SEED,
    DEFAULT_VOICES,
    EXTRA_VOICES,
    SPLITS,
    DemoCorpus,
    build_demo_corpus,
    engines,
)
from training.demo.engines import MissingDependencyError, check_dependencies, pinyin_for_espeak
from training.demo.generated import generate_sentences
from training.demo.sentences import load_sentences, split_sentences
from training.demo.voices import ALL_VOICES, VoiceSpec, check_person_splits, select_voices, voice_by_id
from training.quality import analyse_clip

# Two engines' worth of voices, a pitch variant, a held-out speaker, and the Mandarin path.
TINY_VOICES = ["flite_awb", "flite_awb_p200", "festival_kal", "festival_ked", "espeak_cmn"]
TINY_SENTENCES = 3


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DemoCorpus:
    out = tmp_path_factory.mktemp("demo") / "corpus"
    return build_demo_corpus(out, sentences=TINY_SENTENCES, voices=TINY_VOICES, progress=False)


def test_tiny_build_writes_valid_32k_clips(tiny: DemoCorpus) -> None:
    rows = tiny.utterances()
    assert len(rows) == len(TINY_VOICES) * TINY_SENTENCES
    for row in rows:
        info = sf.info(str(tiny.root / row["wav"]))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (32_000, 1, "PCM_16", "WAV")
        audio, _ = sf.read(str(tiny.root / row["wav"]), dtype="float64")
        assert 0.5 < len(audio) / 32_000 < 15.0
        assert row["duration_s"] == pytest.approx(len(audio) / 32_000, abs=1e-3)
        peak_db = 20 * np.log10(np.max(np.abs(audio)))
        assert peak_db == pytest.approx(-3.0, abs=0.1)
        assert row["sha256"] == hashlib.sha256((tiny.root / row["wav"]).read_bytes()).hexdigest()
        quality = analyse_clip(audio, 32_000)
        assert not quality.exclude, quality.describe()
        assert 0.1 <= quality.leading_silence_s <= 0.5 and 0.05 <= quality.trailing_silence_s <= 0.5, (
            quality.describe()
        )
    assert not list(tiny.root.glob("raw-*")), "scratch folder left behind"


def test_list_files_are_valid_and_cover_every_clip_once(tiny: DemoCorpus) -> None:
    seen: list[str] = []
    for split in SPLITS:
        ds = read_list(tiny.list_path(split))
        assert ds.ok, ds.issues
        seen += [u.utt_id for u in ds.utterances]
        for u in ds.utterances:
            assert u.lang == ("zh" if u.speaker.startswith("espeak") else "en")
            assert u.wav_path.is_file()
    assert sorted(seen) == sorted(r["id"] for r in tiny.utterances())
    train = read_list(tiny.list_path("train")).speakers()
    assert set(train) == {"flite_awb", "flite_awb_p200", "festival_kal", "espeak_cmn"}
    assert set(read_list(tiny.list_path("heldout_train")).speakers()) == {"festival_ked"}
    assert set(read_list(tiny.list_path("heldout_eval")).speakers()) == {"festival_ked"}


def test_eval_sentences_are_never_in_a_training_split(tiny: DemoCorpus) -> None:
    rows = tiny.utterances()
    for lang, sets in tiny.manifest["sentences"].items():
        assert sets["eval"], f"no held-out sentence for {lang}"
        assert not set(sets["train"]) & set(sets["eval"])
    train_sentences = {r["sentence_id"] for r in rows if r["split"] in ("train", "heldout_train")}
    eval_sentences = {r["sentence_id"] for r in rows if r["split"] in ("eval", "heldout_eval")}
    assert eval_sentences and not train_sentences & eval_sentences


def test_manifest_records_licences_persons_and_splits(tiny: DemoCorpus) -> None:
    m = json.loads((tiny.root / "manifest.json").read_text(encoding="utf-8"))
    assert m == tiny.manifest
    assert m["sample_rate"] == 32_000 and m["utterances"] == len(TINY_VOICES) * TINY_SENTENCES
    voices = {v["voice_id"]: v for v in m["voices"]}
    assert sorted(voices) == sorted(TINY_VOICES)
    for v in voices.values():
        assert v["licence"] and v["copyright_file"].startswith("/usr/share/doc/")
        assert v["debian_archive"] == "main"
        assert v["engine"] in ("flite", "festival", "espeak-ng") and v["speaker"] == v["voice_id"]
        assert v["utterances"] == TINY_SENTENCES
    assert voices["flite_awb_p200"]["pitch_cents"] == 200 and voices["flite_awb_p200"]["person"] == "awb"
    assert voices["festival_ked"]["split"] == "heldout"
    assert voices["espeak_cmn"]["native_sample_rate"] == 22_050
    assert m["persons"] == {"awb": "train", "espeak": "train", "kal": "train", "ked": "heldout"}
    assert m["software"]["debian"]["flite"] not in ("not installed", "unknown")
    assert m["splits"]["train"]["utterances"] + m["splits"]["eval"]["utterances"] == 4 * TINY_SENTENCES


def test_no_person_spans_train_and_heldout(tiny: DemoCorpus) -> None:
    persons: dict[str, set[str]] = {}
    for r in tiny.utterances():
        side = "heldout" if r["split"].startswith("heldout") else "train"
        persons.setdefault(r["person"], set()).add(side)
    assert all(len(sides) == 1 for sides in persons.values()), persons
    # The full catalogue too: slt and kal exist in two engines each, awb in RHVoice as well.
    check_person_splits(list(ALL_VOICES))
    by_person: dict[str, set[str]] = {}
    for v in ALL_VOICES:
        by_person.setdefault(v.person, set()).add(v.split)
    assert by_person["rms"] == {"heldout"} and by_person["ked"] == {"heldout"}
    assert by_person["slt"] == {"train"} and by_person["kal"] == {"train"}
    with pytest.raises(ValueError, match="span"):
        check_person_splits(
            [voice_by_id("flite_kal16"), voice_by_id("festival_ked"), _renamed_person("festival_ked", "kal")]
        )


def _renamed_person(voice_id: str, person: str) -> VoiceSpec:
    return replace(voice_by_id(voice_id), person=person)


def test_rebuild_gives_identical_bytes_and_reuses_a_complete_build(tiny: DemoCorpus, tmp_path: Path) -> None:
    before = _hashes(tiny.root)
    manifest_mtime = (tiny.root / "manifest.json").stat().st_mtime_ns
    again = build_demo_corpus(tiny.root, sentences=TINY_SENTENCES, voices=TINY_VOICES, progress=False)
    assert (tiny.root / "manifest.json").stat().st_mtime_ns == manifest_mtime  # reused, not rebuilt
    assert again.manifest == tiny.manifest
    rebuilt = build_demo_corpus(
        tiny.root, sentences=TINY_SENTENCES, voices=TINY_VOICES, force=True, progress=False
    )
    assert (tiny.root / "manifest.json").stat().st_mtime_ns != manifest_mtime
    assert _hashes(rebuilt.root) == before
    # A different folder gives the same bytes too (no absolute paths or times in any output).
    elsewhere = build_demo_corpus(
        tmp_path / "other", sentences=TINY_SENTENCES, voices=TINY_VOICES, workers=1, progress=False
    )
    assert _hashes(elsewhere.root) == before


def test_changed_options_rebuild_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "c"
    build_demo_corpus(out, sentences=2, voices=["flite_slt"], progress=False)
    assert len(list((out / "wavs" / "flite_slt").glob("*.wav"))) == 2
    build_demo_corpus(out, sentences=2, voices=["flite_rms"], progress=False)
    assert not (out / "wavs" / "flite_slt").exists()  # the old build was cleared
    assert read_list(out / "heldout_train.list").speakers() == {"flite_rms": 1}
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match="non-empty"):
        build_demo_corpus(foreign, sentences=1, voices=["flite_slt"], progress=False)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_voice_selection_errors() -> None:
    with pytest.raises(ValueError, match="unknown demo voice 'nobody'"):
        select_voices(["nobody"], extra_voices=False)
    with pytest.raises(ValueError, match="--extra-voices"):
        select_voices(["rhvoice_bdl"], extra_voices=False)
    assert [v.voice_id for v in select_voices(None, extra_voices=False)] == [
        v.voice_id for v in DEFAULT_VOICES
    ]
    assert len(select_voices(None, extra_voices=True)) == len(DEFAULT_VOICES) + len(EXTRA_VOICES)
    assert all(v.archive == "main" for v in DEFAULT_VOICES)
    assert all(v.archive == "non-free" for v in EXTRA_VOICES)


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = engines.shutil.which
    absent = {"festival", "sox", "RHVoice-test"}
    monkeypatch.setattr(engines.shutil, "which", lambda name: None if name in absent else real_which(name))
    with pytest.raises(MissingDependencyError) as err:
        check_dependencies([voice_by_id("festival_ked"), voice_by_id("flite_awb_m200")])
    assert (
        "festival" in str(err.value)
        and "sox" in str(err.value)
        and "apt-get install festival sox" in str(err.value)
    )
    with pytest.raises(MissingDependencyError, match="non-free"):
        check_dependencies([voice_by_id("rhvoice_clb")])
    monkeypatch.setattr(engines, "FESTIVAL_VOICE_ROOTS", ())
    monkeypatch.setattr(engines.shutil, "which", real_which)
    with pytest.raises(MissingDependencyError, match="festvox-kdlpc16k"):
        check_dependencies([voice_by_id("festival_ked")])


def test_sentences_are_many_varied_and_well_formed() -> None:
    en, zh = load_sentences("en"), load_sentences("zh")
    assert len(en) >= 300 and len(zh) >= 80
    for group in (en, zh):
        assert len({s.sentence_id for s in group}) == len(group)
        assert len({s.text for s in group}) == len(group)
    categories = {s.category for s in en}
    assert {"short", "long", "question", "numbers_words", "numbers_digits", "names", "punct"} <= categories
    assert sum(s.text.endswith("?") for s in en) >= 30
    assert sum(bool(re.search(r"\d", s.text)) for s in en) >= 25
    assert max(len(s.text.split()) for s in en) >= 25 and min(len(s.text.split()) for s in en) <= 4
    for s in zh:  # hanzi and Chinese punctuation only: espeak reads what pypinyin converts
        assert not re.search(r"[A-Za-z0-9]", s.text), s


def test_sentence_split_is_seeded_disjoint_and_prefix_stable() -> None:
    en = load_sentences("en")
    train, evals = split_sentences(en, seed=7)
    assert len(evals) == round(len(en) * 0.1) and len(train) + len(evals) == len(en)
    assert not {s.sentence_id for s in train} & {s.sentence_id for s in evals}
    assert split_sentences(en, seed=7) == (train, evals)
    assert split_sentences(en, seed=8)[1] != evals
    small_train, small_eval = split_sentences(en, seed=7, limit=10)
    assert len(small_train) == 9 and len(small_eval) == 1
    assert set(small_eval) <= set(evals) and set(small_train) <= set(train)
    one_train, no_eval = split_sentences(en, seed=7, limit=1)
    assert len(one_train) == 1 and no_eval == [] and set(one_train) <= set(train)


def test_generated_sentences_are_distinct_seeded_and_never_a_written_one() -> None:
    written = load_sentences("en")
    gen = generate_sentences(3000, seed=7, exclude=written)
    assert len(gen) == 3000 and len({s.text for s in gen}) == 3000
    assert [s.sentence_id for s in gen[:2]] == ["g00001", "g00002"] and gen[-1].sentence_id == "g03000"
    assert all(s.lang == "en" and s.category == "generated" and s.text[-1] in ".?" for s in gen)
    assert generate_sentences(3000, seed=7, exclude=written) == gen
    assert generate_sentences(50, seed=8, exclude=written) != gen[:50]

    def words(text: str) -> str:
        return re.sub(r"[^a-z ]", "", text.lower())

    assert not {words(s.text) for s in gen} & {words(s.text) for s in written}
    # an excluded text is never produced: the first ten of seed 7 are skipped when excluded
    again = generate_sentences(200, seed=7, exclude=gen[:10])
    assert not {s.text for s in again} & {s.text for s in gen[:10]}
    vocabulary = {w for s in gen for w in words(s.text).split()}
    assert len(vocabulary) >= 500  # text coverage is the point: not a handful of words
    assert generate_sentences(0, seed=7) == []
    with pytest.raises(ValueError, match=">= 0"):
        generate_sentences(-1, seed=7)


def test_generated_sentences_are_spoken_once_by_training_voices_only(tmp_path: Path) -> None:
    corpus = build_demo_corpus(
        tmp_path / "corpus",
        sentences=2,
        generated=7,
        voices=["flite_slt", "flite_awb_p200", "festival_kal", "flite_rms", "espeak_cmn"],
        progress=False,
    )
    ds = read_list(corpus.list_path("train_generated"))
    assert ds.ok, ds.issues
    assert len(ds.utterances) == 7
    # English training voices only: never the held-out person rms, never the zh voice
    assert set(ds.speakers()) == {"flite_slt", "flite_awb_p200", "festival_kal"}
    texts = [u.text for u in ds.utterances]
    assert sorted(texts) == sorted(
        s.text for s in generate_sentences(7, seed=DEFAULT_SEED, exclude=load_sentences("en"))
    )
    rows = [r for r in corpus.utterances() if r["split"] == "train_generated"]
    assert all(r["sentence_id"].startswith("g") and r["category"] == "generated" for r in rows)
    assert corpus.manifest["generated_sentences"]["count"] == 7
    assert corpus.manifest["splits"]["train_generated"]["utterances"] == 7
    for u in ds.utterances:
        audio, rate = sf.read(str(u.wav_path))
        assert rate == 32_000 and len(audio) > rate
    with pytest.raises(ValueError, match="--generated"):
        build_demo_corpus(tmp_path / "bad", sentences=2, generated=-1, voices=["flite_slt"], progress=False)


def test_pinyin_for_espeak_keeps_tones_and_punctuation() -> None:
    assert pinyin_for_espeak("你好，世界。") == "ni3 hao3, shi4 jie4."
    assert pinyin_for_espeak("“绿色的吗？”她问。") == "lv4 se4 de5 ma5? ta1 wen4."


def test_cli_demo_builds_and_lists_voices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="tritone")
    data_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "demo", "--list-voices"])
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    assert "festival_ked" in listing and "[extra: Debian non-free]" in listing
    out = tmp_path / "cli_demo"
    args = parser.parse_args(
        ["data", "demo", "--out", str(out), "--sentences", "2", "--voices", "flite_slt,flite_rms"]
    )
    assert args.func(args) == 0
    assert "2 voices, 4 clips" in capsys.readouterr().out
    assert read_list(out / "train.list").speakers() == {"flite_slt": 1}
    assert read_list(out / "heldout_eval.list").speakers() == {"flite_rms": 1}


def test_demo_recipe_refines_the_spectral_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tritone train demo --stage refine` trains on from the `spectral` stage's bundle, round by
    round, each round from the previous round's bundle into its own run folder (the stages run as
    subprocesses; they are recorded here, the training itself is tested in test_train.py), and
    an unknown stage is refused instead of doing nothing."""
    from training.recipes import demo as recipe_mod

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.list").write_text("")
    calls: list[list[str]] = []
    monkeypatch.setattr(recipe_mod.subprocess, "run", lambda cmd, check: calls.append(list(cmd)))
    monkeypatch.setattr(recipe_mod, "REFINE_ROUNDS", ((70, 0.0), (30, 0.0), (20, 45.0)))
    recipe = recipe_mod.DemoRecipe(
        corpus=corpus, run_dir=tmp_path / "runs", out=tmp_path / "out", progress=False
    )
    result = recipe_mod.run_demo(recipe, "refine")

    runs = tmp_path / "runs"
    assert result == {"refine": str(runs / "refine3" / "base")}
    stages = [c[c.index("--stage") + 1] for c in calls]
    assert stages == ["encode", "gpt", "sovits", "export", "register"] * 3
    expected = [  # (init, run dir, SoVITS steps, magnitude loss weight or None) of each round
        (runs / "spectral" / "base", runs / "refine", "70", None),
        (runs / "refine" / "base", runs / "refine2", "30", None),
        (runs / "refine2" / "base", runs / "refine3", "20", "45.0"),
    ]
    for i, cmd in enumerate(calls):
        assert cmd[3:5] == ["train", "base"]  # after `python -m tritone.cli`
        opt = {
            name: cmd[cmd.index(name) + 1]
            for name in ("--init", "--run-dir", "--sovits-steps", "--gpt-steps")
        }
        init, run_dir, steps, magnitude = expected[i // 5]
        assert (opt["--init"], opt["--run-dir"]) == (str(init), str(run_dir))
        assert opt["--sovits-steps"] == steps and opt["--gpt-steps"] == "0"
        assert (
            cmd[cmd.index("--magnitude-weight") + 1] if "--magnitude-weight" in cmd else None
        ) == magnitude
        assert "--vocoder" not in cmd  # the bundle's own (spectral) generator is trained on

    # the later stages use the last round's bundle
    monkeypatch.setattr(recipe_mod, "train_adapters", lambda recipe, base: str(base))
    assert recipe_mod.run_demo(recipe, "adapters") == {"adapters": str(runs / "refine3" / "base")}

    # the optional text stage needs the generated sentences, and says how to build them
    calls.clear()
    with pytest.raises(FileNotFoundError, match="--generated 6000"):
        recipe_mod.run_demo(recipe, "text")
    (corpus / "train_generated.list").write_text("wavs/a/a_g00001.wav|a|en|One.\n")
    # it trains the last round's GPT on the written and the generated sentences, SoVITS kept
    assert recipe_mod.run_demo(recipe, "text") == {"text": str(runs / "text" / "base")}
    assert [c[c.index("--stage") + 1] for c in calls] == ["encode", "gpt", "sovits", "export", "register"]
    for cmd in calls:
        lists = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--train-list"]
        assert lists == [str(corpus / "train.list"), str(corpus / "train_generated.list")]
        assert cmd[cmd.index("--init") + 1] == str(runs / "refine3" / "base")
        assert cmd[cmd.index("--run-dir") + 1] == str(runs / "text")
        assert cmd[cmd.index("--gpt-steps") + 1] == str(recipe_mod.TEXT_GPT_STEPS) != "0"
        assert cmd[cmd.index("--sovits-steps") + 1] == "0"
    # and is not part of `all`: no stage of `all` touches the text folder
    calls.clear()
    monkeypatch.setattr(recipe_mod, "train_base", lambda recipe: runs / "base" / "base")
    for name in ("evaluate", "ship"):
        monkeypatch.setattr(recipe_mod, name, lambda recipe, base: str(base))
    result = recipe_mod.run_demo(recipe, "all")
    assert "text" not in result and result["ship"] == str(runs / "refine3" / "base")
    assert not any(str(runs / "text") in cmd for c in calls for cmd in c)

    from tritone.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["train", "demo", "--stage", "refin"])
    assert refused.value.code == 2


def test_ablation_uses_the_shipped_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter ablation trains and evaluates its variants on the base the demo voice uses."""
    import training.evaluate
    import training.train_adapter
    from training.recipes import ablation
    from training.recipes import demo as recipe_mod

    monkeypatch.setenv("TRITONE_HOME", str(tmp_path))
    trained: list[tuple[str, Path]] = []
    evaluated: list[Path] = []

    class Report:
        def write(self, path: Path) -> None:
            path.write_text("{}")

        def markdown(self) -> str:
            return ""

    folders: list[tuple[str, object, object]] = []

    def fake_train(
        variant: str,
        voice_id: str,
        base: Path,
        corpus: Path,
        out: Path,
        consent: Path,
        seed: int,
        *rest: object,
    ) -> None:
        trained.append((variant, base))
        folders.append((out.name, *rest))

    def fake_evaluate(base: Path, *args: object, **kwargs: object) -> Report:
        evaluated.append(base)
        return Report()

    monkeypatch.setattr(ablation, "_train", fake_train)
    monkeypatch.setattr(ablation, "demo_consent", lambda voice_id, out: out)
    monkeypatch.setattr(training.train_adapter, "speaker_utterances", lambda *args: [])
    monkeypatch.setattr(training.evaluate, "evaluate_speaker", fake_evaluate)
    (tmp_path / "runs" / "demo" / "ablation").mkdir(parents=True)
    assert ablation.main(["--variants", "gpt", "gpt+mrte+flow"]) == 0

    shipped = recipe_mod.shipped_base_dir(tmp_path / "runs" / "demo")
    assert shipped == tmp_path / "runs" / "demo" / "refine2" / "base"
    assert trained == [("gpt", shipped), ("gpt+mrte+flow", shipped)] and evaluated == [shipped]
    assert [f[0] for f in folders] == ["gpt", "gpt+mrte+flow"]

    # other settings train into their own folders and report under the given name
    folders.clear()
    assert ablation.main(["--variants", "gpt", "--steps", "1200", "--lr", "0.002", "--report", "steps"]) == 0
    assert folders == [("gpt-1200steps-lr0.002", 1200, 0.002, 0.0)]
    assert (tmp_path / "runs" / "demo" / "ablation" / "steps.json").is_file()
    folders.clear()
    assert ablation.main(["--variants", "gpt", "--magnitude-weight", "45"]) == 0
    assert folders == [("gpt-mag45", 600, 0.001, 45.0)]
    with pytest.raises(SystemExit):
        ablation.main(["--report", "../outside"])
