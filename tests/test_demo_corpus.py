"""The built-in demo corpus: layouts, languages and scripts, paper-like imbalance, determinism, atomic builds."""

import csv
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import soundfile

from mlpl.demo_corpus import (
    DEMO_CORPUS_VERSION,
    LANGUAGES,
    MIXED_FOLDER,
    PLENARY_HALL,
    SIZES,
    VOXPOPULI_ASR_FOLDER,
    far_field,
    _make_job,
    make_demo_corpus,
    read_manifest,
    read_mixed_manifest,
)

REPOSITORY = Path(__file__).resolve().parents[1]


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as table:
        return list(csv.DictReader(table, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_manifest_languages_scripts_and_licenses(tiny_demo_corpus):
    manifest = read_manifest(tiny_demo_corpus)

    assert len(manifest["languages"]) >= 6
    assert len(manifest["scripts"]) >= 3 and {"Latin", "Cyrillic", "Greek"} <= set(manifest["scripts"])
    assert manifest["parameters"] == {"size": "tiny", "seed": 0, "corpus_version": DEMO_CORPUS_VERSION}
    assert "GPL-3" in manifest["licenses"]["speech"] and "CC-BY-SA 4.0" in manifest["licenses"]["text"]
    assert manifest["generators"]["espeak-ng"].startswith("1.")


def test_imbalance_is_paper_like(tiny_demo_corpus):
    languages = read_manifest(tiny_demo_corpus)["languages"]
    by_role = {role: [l for l in languages.values() if l["role"] == role] for role in ("high", "mid", "low")}

    assert min(l["hours"]["train"] for l in by_role["high"]) > max(l["hours"]["train"] for l in by_role["mid"])
    assert min(l["hours"]["train"] for l in by_role["mid"]) > max(l["hours"]["train"] for l in by_role["low"])
    assert all(l["hours"]["unlabeled"] > l["hours"]["train"] for l in by_role["low"])
    assert all(l["hours"]["unlabeled"] == 0 for l in by_role["high"] + by_role["mid"])
    # the default size: over an hour labeled for the high languages, a few minutes (+ unlabeled) for the low
    default = SIZES["default"]
    assert default["high"]["train"] > 60 and default["low"]["train"] <= 5 and default["low"]["unlabeled"] >= 10


def test_common_voice_layout_and_text_in_each_languages_script(tiny_demo_corpus):
    for language in LANGUAGES:
        folder = tiny_demo_corpus / "cv" / language.code
        splits = {split: read_tsv(folder / f"{split}.tsv") for split in ("train", "dev", "test")}
        validated = read_tsv(folder / "validated.tsv")
        assert [row["path"] for row in validated] == [row["path"] for split in splits.values() for row in split]
        assert {"client_id", "path", "sentence", "locale"} <= set(validated[0])
        # speakers do not cross splits, and there are several per split
        speakers = {split: {row["client_id"] for row in rows} for split, rows in splits.items()}
        assert not speakers["train"] & (speakers["dev"] | speakers["test"])
        assert len(speakers["train"]) > 1
        for row in validated:
            assert row["locale"] == language.code
            letters = [character for character in row["sentence"] if character.isalpha()]
            assert letters and all(unicodedata.name(character).startswith(language.script) for character in letters)
            info = soundfile.info(folder / "clips" / row["path"])
            assert (info.format, info.samplerate, info.channels) == ("MP3", 48000, 1)


def test_voxpopuli_layout_utterances_are_10_to_30_seconds(tiny_demo_corpus):
    utterances = sorted((tiny_demo_corpus / "voxpopuli").glob("*/*/*.ogg"))
    assert {path.parts[-3] for path in utterances} == {l.code for l in LANGUAGES if l.role == "low"}
    for path in utterances:
        info = soundfile.info(path)
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("OGG", "VORBIS", 16000, 1)
        assert 10.0 <= info.duration <= 30.0
        assert path.parent.name.isdigit()  # <lang>/<year>/


def test_mixed_folder_every_language_unknown_to_the_loaders_truth_only_in_its_tsv(tiny_demo_corpus):
    """voxpopuli_mixed/und/: VoxPopuli layout, language "und"; manifest.tsv beside it keeps each clip's true
    language and text; manifest.json (read by the recipe) only the totals."""
    mixed = tiny_demo_corpus / MIXED_FOLDER
    rows = read_mixed_manifest(tiny_demo_corpus)
    clips = sorted((mixed / "und").glob("*/*.ogg"))
    assert sorted(row["language"] for row in rows) == sorted(language.code for language in LANGUAGES)
    assert sorted(mixed / row["path"] for row in rows) == clips
    for row in rows:
        info = soundfile.info(mixed / row["path"])
        assert (info.format, info.samplerate) == ("OGG", 16000) and info.duration == pytest.approx(row["duration"], abs=1e-3)
        letters = [character for character in row["sentence"] if character.isalpha()]
        script = next(language.script for language in LANGUAGES if language.code == row["language"])
        assert letters and all(unicodedata.name(character).startswith(script) for character in letters)
    manifest = read_manifest(tiny_demo_corpus)
    assert manifest["mixed"]["clips"] == len(clips) and manifest["mixed"]["manifest"] == f"{MIXED_FOLDER}/manifest.tsv"
    assert "language" not in json.dumps(manifest["mixed"])
    assert all(set(language["clips"]) == {"train", "dev", "test", "unlabeled"} for language in manifest["languages"].values())


def test_plenary_hall_domain_adds_transcribed_voxpopuli_sets_and_leaves_common_voice_as_it_was(tiny_demo_corpus, hall_demo_corpus):
    """voxpopuli_asr/<lang>/asr_{dev,test}.tsv in VoxPopuli's columns, audio at <lang>/<year>/<id>.ogg, speakers of
    their own; the real loader (source kind voxpopuli_asr) reads it as labeled data. The Common Voice part is the
    default corpus's, byte for byte; the unlabeled utterances say the same through the hall."""
    from mlpl.sources import load_labeled_source, resolve_source

    assert not (tiny_demo_corpus / VOXPOPULI_ASR_FOLDER).exists()
    assert read_manifest(hall_demo_corpus)["parameters"] == {"size": "tiny", "seed": 0, "corpus_version": DEMO_CORPUS_VERSION, "voxpopuli_domain": "plenary_hall"}
    assert read_manifest(hall_demo_corpus)["plenary_hall"] == {key: list(value) for key, value in PLENARY_HALL.items()}
    for clip in sorted((tiny_demo_corpus / "cv").rglob("*.*")):
        assert clip.read_bytes() == (hall_demo_corpus / clip.relative_to(tiny_demo_corpus)).read_bytes(), clip
    for clip in sorted((tiny_demo_corpus / "voxpopuli").rglob("*.ogg")):
        same, hall = soundfile.read(clip)[0], soundfile.read(hall_demo_corpus / clip.relative_to(tiny_demo_corpus))[0]
        assert same.shape == hall.shape and not np.allclose(same, hall, atol=1e-3)
    folder = hall_demo_corpus / VOXPOPULI_ASR_FOLDER
    low = sorted(language.code for language in LANGUAGES if language.role == "low")
    assert sorted(p.name for p in folder.iterdir()) == low
    manifest = read_manifest(hall_demo_corpus)["languages"]
    for code in low:
        tables = {split: read_tsv(folder / code / f"asr_{split}.tsv") for split in ("dev", "test")}
        assert list(tables["test"][0]) == ["id", "raw_text", "normalized_text", "speaker_id", "split", "gender", "is_gold_transcript", "accent"]
        assert len(tables["test"]) == manifest[code]["clips"]["vp_test"] > 0 and manifest[code]["transcribed_path"] == f"{VOXPOPULI_ASR_FOLDER}/{code}"
        for split, rows in tables.items():
            for row in rows:
                info = soundfile.info(folder / code / row["id"][:4] / f"{row['id']}.ogg")
                assert (info.format, info.samplerate, row["split"]) == ("OGG", 16000, split)
                assert row["normalized_text"] == " ".join("".join(c for c in row["raw_text"].lower() if c.isalpha() or c.isspace()).split())
        cv_speakers = {row["client_id"][:8] for split in ("train", "dev", "test") for row in read_tsv(hall_demo_corpus / "cv" / code / f"{split}.tsv")}
        assert not cv_speakers & {row["speaker_id"] for rows in tables.values() for row in rows}
    assert resolve_source(folder)[0] == "voxpopuli_asr"
    dataset = load_labeled_source(folder, "test")
    assert sorted(set(dataset["language"])) == low
    assert sorted(dataset["sentence"]) == sorted(row["raw_text"] for code in low for row in read_tsv(folder / code / "asr_test.tsv"))


def test_far_field_reverberates_band_limits_and_adds_noise_deterministically():
    rate = 16000
    dry = np.zeros(rate, dtype=np.float32)
    dry[::400] = 0.5  # clicks: broadband, silent in between
    room = {"rt60_seconds": 0.6, "direct_to_reverberant_db": 0.0, "snr_db": 15.0}

    wet = far_field(dry, rate, room, np.random.default_rng(1))
    assert wet.dtype == np.float32 and wet.shape == dry.shape
    np.testing.assert_array_equal(wet, far_field(dry, rate, room, np.random.default_rng(1)))
    assert np.abs(wet).max() == pytest.approx(0.5, rel=1e-5)  # the input's peak
    spectrum = lambda x: np.abs(np.fft.rfft(x)) ** 2  # noqa: E731
    frequencies = np.fft.rfftfreq(rate, 1 / rate)
    low, high = PLENARY_HALL["band_hz"]

    def power(x, lower, upper):
        return spectrum(x)[(frequencies >= lower) & (frequencies < upper)].sum()

    # the microphone's band: above it and below it lose far more than inside it
    middle = power(wet, 1000, 2000) / power(dry, 1000, 2000)
    assert power(wet, 1.25 * high, 8000) / power(dry, 1.25 * high, 8000) < middle / 5
    assert power(wet, 1, 0.5 * low) / power(dry, 1, 0.5 * low) < middle / 5
    # the gaps between clicks are filled: reverberation and noise
    gaps = np.ones(rate, dtype=bool)
    for offset in range(-40, 41):
        gaps[np.clip(np.arange(0, rate, 400) + offset, 0, rate - 1)] = False
    assert np.abs(dry[gaps]).max() == 0 and np.sqrt(np.mean(wet[gaps] ** 2)) > 0.01
    # a shorter room leaves the signal closer to the dry one
    dry_room = {"rt60_seconds": 0.05, "direct_to_reverberant_db": 20.0, "snr_db": 60.0}
    close = far_field(dry, rate, dry_room, np.random.default_rng(1))
    assert np.sqrt(np.mean(close[gaps] ** 2)) < np.sqrt(np.mean(wet[gaps] ** 2)) / 3


def test_only_voxpopuli_layout_clips_go_through_the_plenary_hall_and_only_when_asked():
    hall = "plenary_hall"
    assert _make_job(0, 5, "train", 0, Path("x"), hall)["room"] is None and _make_job(0, 5, "test", 0, Path("x"), hall)["room"] is None
    assert _make_job(0, 5, "unlabeled", 0, Path("x"))["room"] is None  # the default domain: no hall
    unchanged = ("texts", "voice", "rate", "pitch", "peak", "snr_db", "noise_seed")
    assert [_make_job(0, 5, "unlabeled", 0, Path("x"))[k] for k in unchanged] == [_make_job(0, 5, "unlabeled", 0, Path("x"), hall)[k] for k in unchanged]
    with pytest.raises(ValueError, match="voxpopuli_domain='hall'"):
        make_demo_corpus(Path("x"), "tiny", voxpopuli_domain="hall")
    for split in ("unlabeled", "mixed", "vp_dev", "vp_test"):
        room = _make_job(0, 5, split, 3, Path("x"), hall)["room"]
        assert PLENARY_HALL["rt60_seconds"][0] <= room["rt60_seconds"] <= PLENARY_HALL["rt60_seconds"][1]
        assert PLENARY_HALL["snr_db"][0] <= room["snr_db"] <= PLENARY_HALL["snr_db"][1]


def test_no_two_clips_share_their_voice_settings():
    jobs = [_make_job(0, language_index, "train", index, Path("x")) for language_index in (0, 5) for index in range(200)]
    settings = {(job["voice"], job["rate"], job["pitch"], job["pitch_range"], job["peak"]) for job in jobs}
    assert len(settings) == len(jobs)
    assert len({job["voice"].split("+")[1] for job in jobs}) >= 6


def test_same_seed_same_corpus_whatever_the_workers(tiny_demo_corpus, tmp_path):
    rebuilt = make_demo_corpus(tmp_path / "again", size="tiny", seed=0, workers=1)

    files = sorted(path.relative_to(tiny_demo_corpus) for path in tiny_demo_corpus.rglob("*.*"))
    assert files == sorted(path.relative_to(rebuilt) for path in rebuilt.rglob("*.*"))
    for name in files:
        if name.suffix in (".tsv", ".mp3"):
            assert (tiny_demo_corpus / name).read_bytes() == (rebuilt / name).read_bytes(), name
        elif name.suffix == ".ogg":  # bytes differ in the Ogg stream serial number only
            np.testing.assert_array_equal(soundfile.read(tiny_demo_corpus / name)[0], soundfile.read(rebuilt / name)[0])
    assert read_manifest(tiny_demo_corpus)["languages"] == read_manifest(rebuilt)["languages"]
    # another seed: other sentences
    assert _make_job(1, 0, "train", 0, Path("x"))["texts"] != _make_job(0, 0, "train", 0, Path("x"))["texts"]


def test_a_complete_corpus_is_not_rebuilt_and_builds_leave_nothing_behind(tiny_demo_corpus):
    manifest = tiny_demo_corpus / "manifest.json"
    before = manifest.stat().st_mtime_ns

    assert make_demo_corpus(tiny_demo_corpus, size="tiny", seed=0) == tiny_demo_corpus
    assert manifest.stat().st_mtime_ns == before
    assert [p.name for p in tiny_demo_corpus.parent.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(ValueError, match="'huge'"):
        make_demo_corpus(tiny_demo_corpus, size="huge")


def test_command_line_reuses_the_existing_corpus(tiny_demo_corpus):
    script = REPOSITORY / "scripts" / "make_demo_corpus.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--out", str(tiny_demo_corpus), "--size", "tiny"],
        capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), check=True, timeout=60,
    )
    assert f"demo corpus in {tiny_demo_corpus}" in completed.stdout
    hours_printed = json.loads(completed.stdout.split("\n", 1)[1])
    assert hours_printed == {code: l["hours"] for code, l in read_manifest(tiny_demo_corpus)["languages"].items()}
