"""mlpl.data: every source yields the same schema; bad clips are skipped, counted and named (docs/design.md §8)."""

import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from datasets import Audio, ClassLabel, Dataset, Features, IterableDataset, Value
from datasets.distributed import split_dataset_by_node

from mlpl.data import (
    SKIP_EMPTY_AUDIO,
    SKIP_EMPTY_TRANSCRIPT,
    SKIP_UNDECODABLE,
    SkipCounter,
    example_durations,
    records_of,
)
from mlpl.loaders import (
    common_voice_records,
    load_common_voice_folder,
    load_flashlight_list,
    load_hub_dataset,
    load_voxpopuli_asr_folder,
    load_voxpopuli_folder,
    read_flashlight_list,
    write_flashlight_list,
)

LANGUAGES = {"en", "de", "es", "ru", "fi", "el", "bg"}
LOW_RESOURCE = {"fi", "el", "bg"}


def assert_schema(example, labeled=True):
    assert set(example) == {"id", "audio", "sentence", "language", "duration"}
    assert isinstance(example["id"], str) and example["id"]
    audio = example["audio"]
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
    assert example["duration"] == pytest.approx(audio.size / 16000)
    assert isinstance(example["language"], str) and example["language"]
    if labeled:
        assert isinstance(example["sentence"], str) and example["sentence"].strip()
    else:
        assert example["sentence"] is None


def all_examples(dataset):
    return dataset.__getitems__(list(range(len(dataset)))) if isinstance(dataset, Dataset) else list(dataset)


# --- Common Voice folders --------------------------------------------------------------------------


def test_common_voice_folder_map_style_all_languages(tiny_demo_corpus):
    dataset = load_common_voice_folder(tiny_demo_corpus / "cv", "train")

    examples = all_examples(dataset)
    assert len(examples) == len(common_voice_records(tiny_demo_corpus / "cv", "train"))
    for example in examples:
        assert_schema(example)
    assert {example["language"] for example in examples} == LANGUAGES
    # durations come from the headers, without decoding, and agree with the decoded audio
    np.testing.assert_allclose(example_durations(dataset), [e["duration"] for e in examples], atol=0.002)


def test_common_voice_stream_shards_are_disjoint_and_complete(tiny_demo_corpus):
    records = common_voice_records(tiny_demo_corpus / "cv", "dev", languages=["en", "el"])
    stream = load_common_voice_folder(tiny_demo_corpus / "cv", "dev", languages=["en", "el"], streaming=True, num_shards=4)

    assert isinstance(stream, IterableDataset) and stream.num_shards == 4
    shares = [[e["id"] for e in split_dataset_by_node(stream, rank=rank, world_size=2)] for rank in range(2)]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(record["id"] for record in records)
    for example in stream:
        assert_schema(example)
        assert example["language"] in {"en", "el"}


def test_one_language_folder_or_several_roots(tiny_demo_corpus):
    single = load_common_voice_folder(tiny_demo_corpus / "cv" / "fi", "test")
    several = load_common_voice_folder([tiny_demo_corpus / "cv" / "fi", tiny_demo_corpus / "cv" / "bg"], "test")

    assert set(single.with_format(None)["language"]) == {"fi"}
    assert set(several.with_format(None)["language"]) == {"fi", "bg"}
    with pytest.raises(ValueError, match="other.tsv"):
        load_common_voice_folder(tiny_demo_corpus / "cv", "other")
    with pytest.raises(ValueError, match="xx"):
        load_common_voice_folder(tiny_demo_corpus / "cv", languages=["xx"])


# --- VoxPopuli folders -----------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True])
def test_voxpopuli_folder_is_unlabeled_low_resource_audio(tiny_demo_corpus, streaming):
    dataset = load_voxpopuli_folder(tiny_demo_corpus / "voxpopuli", streaming=streaming)

    examples = all_examples(dataset)
    assert {example["language"] for example in examples} == LOW_RESOURCE
    for example in examples:
        assert_schema(example, labeled=False)
        assert 10.0 <= example["duration"] <= 30.0


# --- VoxPopuli transcribed (ASR) folders -------------------------------------------------------------


def test_voxpopuli_asr_folder_reads_each_split_with_raw_or_normalized_text(hall_demo_corpus):
    import csv

    from mlpl.config import SourceConfig
    from mlpl.sources import configured_transcripts, load_source, source_languages

    root = hall_demo_corpus / "voxpopuli_asr"
    with open(root / "el" / "asr_dev.tsv", encoding="utf-8", newline="") as table:
        rows = list(csv.DictReader(table, delimiter="\t", quoting=csv.QUOTE_NONE))
    dataset = load_voxpopuli_asr_folder(root, "dev", languages=["el"])
    examples = all_examples(dataset)
    assert sorted(e["id"] for e in examples) == sorted(row["id"] for row in rows)
    for example in examples:
        assert_schema(example)
        assert example["language"] == "el" and example["sentence"] == next(r["raw_text"] for r in rows if r["id"] == example["id"])
    normalized = SourceConfig(kind="voxpopuli_asr", path=str(root), split="dev", languages=["el"], columns={"sentence": "normalized_text"})
    assert sorted(all_examples(load_source(normalized)), key=lambda e: e["id"])[0]["sentence"] == sorted(rows, key=lambda r: r["id"])[0]["normalized_text"]
    assert sorted(text for _, text in configured_transcripts(normalized)) == sorted(row["normalized_text"] for row in rows)
    assert source_languages(SourceConfig(kind="voxpopuli_asr", path=str(root), split="test")) == sorted(LOW_RESOURCE)
    with pytest.raises(ValueError, match=r"asr_train\.tsv does not exist; VoxPopuli ASR splits in .*\['dev', 'test'\]"):
        load_voxpopuli_asr_folder(root, "train")


def test_voxpopuli_asr_row_without_audio_is_a_counted_skip_and_a_table_without_text_is_named(hall_demo_corpus, tmp_path, caplog):
    folder = tmp_path / "asr" / "fi"
    shutil.copytree(hall_demo_corpus / "voxpopuli_asr" / "fi", folder)
    table = folder / "asr_test.tsv"
    lines = table.read_text(encoding="utf-8").splitlines()
    lines.append("20200101-0900-PLENARY-gone\tMissing audio.\tmissing audio\tx\ttest\t\tTrue\tNone")
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="mlpl.data"):
        dataset = load_voxpopuli_asr_folder(folder.parent, "test")
    assert len(all_examples(dataset)) == len(lines) - 2  # header and the row without audio
    assert "20200101-0900-PLENARY-gone.ogg" in caplog.text and f"{table}:{len(lines)}" in caplog.text
    table.write_text("id\tnormalized_text\nx\ty\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"asr_test\.tsv: no 'raw_text' column"):
        load_voxpopuli_asr_folder(folder.parent, "test")


# --- bad data ------------------------------------------------------------------------------------


@pytest.fixture
def damaged_common_voice(tiny_demo_corpus, tmp_path):
    """The Finnish train split plus an undecodable clip, an empty clip and an empty transcript."""
    folder = tmp_path / "fi"
    shutil.copytree(tiny_demo_corpus / "cv" / "fi", folder)
    (folder / "clips" / "broken.mp3").write_bytes(b"not an mp3 at all" * 40)
    soundfile.write(folder / "clips" / "empty.wav", np.zeros(0, np.float32), 16000)
    good = next(line.split("\t")[1] for line in (folder / "train.tsv").read_text().splitlines()[1:])
    with open(folder / "train.tsv", "a", encoding="utf-8") as table:
        table.write("x\tbroken.mp3\t1\tHyvä lause.\t\t2\t0\t\t\t\t\tfi\t\n")
        table.write("x\tempty.wav\t2\tToinen lause.\t\t2\t0\t\t\t\t\tfi\t\n")
        table.write(f"x\t{good}\t3\t   \t\t2\t0\t\t\t\t\tfi\t\n")
    return folder


@pytest.mark.parametrize("streaming", [False, True])
def test_bad_clips_are_skipped_counted_and_named(damaged_common_voice, streaming, caplog):
    total_rows = len((damaged_common_voice / "train.tsv").read_text().splitlines()) - 1
    with caplog.at_level(logging.INFO, logger="mlpl.data"):
        examples = all_examples(load_common_voice_folder(damaged_common_voice, streaming=streaming, num_shards=1))

    assert len(examples) == total_rows - 3
    for example in examples:
        assert_schema(example)
    summaries = [record.getMessage() for record in caplog.records if "skipped 3 of" in record.getMessage()]
    assert len(summaries) == 1, caplog.text
    summary = summaries[0]
    assert f"skipped 3 of {total_rows}" in summary
    assert f"1 {SKIP_UNDECODABLE} (e.g. {damaged_common_voice / 'clips' / 'broken.mp3'}" in summary
    assert f"1 {SKIP_EMPTY_AUDIO} (e.g. {damaged_common_voice / 'clips' / 'empty.wav'}" in summary
    assert f"1 {SKIP_EMPTY_TRANSCRIPT} (e.g." in summary


def test_a_clip_that_breaks_after_the_scan_is_dropped_from_its_batch(tiny_demo_corpus, tmp_path, caplog):
    shutil.copytree(tiny_demo_corpus / "cv" / "bg", tmp_path / "bg")
    dataset = load_common_voice_folder(tmp_path / "bg", "train")
    victim = dataset.with_format(None)[1]
    (tmp_path / "bg" / "clips" / f"{victim['id']}.mp3").write_bytes(b"")  # truncated after the scan

    with caplog.at_level(logging.WARNING, logger="mlpl.data"):
        batch = dataset.__getitems__(list(range(len(dataset))))

    assert len(batch) == len(dataset) - 1 and victim["id"] not in {example["id"] for example in batch}
    assert f"{victim['id']}.mp3" in caplog.text and "skipped, 1 of" in caplog.text


def test_skip_counters_pickle_and_merge():
    first, second = SkipCounter(seen=10), SkipCounter(seen=5)
    first.skip(SKIP_UNDECODABLE, "a.mp3", "LibsndfileError: bad")
    second.skip(SKIP_UNDECODABLE, "b.mp3")
    second.skip(SKIP_EMPTY_TRANSCRIPT, "17")

    merged = pickle.loads(pickle.dumps(first)) + pickle.loads(pickle.dumps(second))

    assert (merged.seen, merged.skipped, merged.counts) == (15, 3, {SKIP_UNDECODABLE: 2, SKIP_EMPTY_TRANSCRIPT: 1})
    assert merged.summary() == (
        "skipped 3 of 15: 2 undecodable (e.g. a.mp3: LibsndfileError: bad; b.mp3), 1 empty transcript (e.g. 17)"
    )
    assert first.seen == 10  # + leaves its operands alone


# --- Flashlight lists ----------------------------------------------------------------------------


def test_flashlight_list_round_trip(tiny_demo_corpus, tmp_path):
    source = load_common_voice_folder(tiny_demo_corpus / "cv", "train", languages=["ru"])
    rows = records_of(source)
    list_path = tmp_path / "train_ru.lst"

    assert write_flashlight_list(rows, list_path) == len(source)

    first_line = list_path.read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert first_line[0] == rows[0]["id"] and first_line[1] == rows[0]["audio"]["path"]
    assert float(first_line[2]) == pytest.approx(rows[0]["duration"] * 1000, abs=0.01)  # milliseconds
    records = read_flashlight_list(list_path, language="ru")
    assert [(r["id"], r["sentence"], str(r["audio"])) for r in records] == [
        (row["id"], row["sentence"], row["audio"]["path"]) for row in rows
    ]
    np.testing.assert_allclose([r["duration"] for r in records], rows["duration"], atol=1e-5)
    reloaded = load_flashlight_list(list_path, language="ru")
    assert reloaded.with_format(None)["id"][:] == rows["id"][:]
    assert_schema(reloaded[0])


def test_flashlight_unlabeled_lists_relative_paths_and_errors(tiny_demo_corpus, tmp_path):
    clip = sorted((tiny_demo_corpus / "voxpopuli" / "el").rglob("*.ogg"))[0]
    shutil.copy(clip, tmp_path / "utterance.ogg")
    (tmp_path / "unlabeled.lst").write_text("u1 utterance.ogg 12000.5\n\n", encoding="utf-8")

    stream = load_flashlight_list(tmp_path / "unlabeled.lst", language="el", labeled=False, streaming=True)
    (example,) = list(stream)
    assert_schema(example, labeled=False)
    assert example["id"] == "u1"

    (tmp_path / "bad.lst").write_text("u1 utterance.ogg 10 fine\nu2 utterance.ogg\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.lst:2"):
        read_flashlight_list(tmp_path / "bad.lst", language="el")
    with pytest.raises(ValueError, match="has space"):
        write_flashlight_list([{"id": "has space", "path": "a.ogg", "duration": 1.0}], tmp_path / "out.lst")


# --- Hub datasets (through a local parquet mirror: the same load_dataset code path) --------------


@pytest.fixture
def parquet_mirror(tiny_demo_corpus, tmp_path):
    """A Common Voice parquet mirror of two languages (audio bytes embedded), plus an empty transcript."""
    records = common_voice_records(tiny_demo_corpus / "cv", "dev", languages=["de", "fi"])
    rows = [
        {
            "client_id": "c",
            "path": Path(record["audio"]).name,
            "audio": {"bytes": Path(record["audio"]).read_bytes(), "path": Path(record["audio"]).name},
            "sentence": record["sentence"],
            "locale": record["language"],
        }
        for record in records
    ]
    rows[0] = dict(rows[0], sentence="")
    features = Features(
        {
            "client_id": Value("string"),
            "path": Value("string"),
            "audio": {"bytes": Value("binary"), "path": Value("string")},
            "sentence": Value("string"),
            "locale": Value("string"),
        }
    )
    folder = tmp_path / "common_voice_mirror" / "data"
    folder.mkdir(parents=True)
    # Typed Audio (decoding on) as the Hub mirrors are; the loader must read it without torchcodec.
    mirror = Dataset.from_list(rows, features=features).cast_column("audio", Audio(sampling_rate=48000))
    mirror.to_parquet(folder / "dev-00000-of-00001.parquet")
    return folder.parent, [row["path"].removesuffix(".mp3") for row in rows[1:]]


@pytest.mark.parametrize("streaming", [True, False])
def test_hub_parquet_mirror_through_load_dataset(parquet_mirror, streaming, caplog):
    folder, expected_ids = parquet_mirror
    with caplog.at_level(logging.INFO, logger="mlpl.data"):
        dataset = load_hub_dataset(
            "parquet", data_files={"dev": str(folder / "data" / "*.parquet")}, split="dev", streaming=streaming,
            columns={"id": "path"},
        )
        examples = all_examples(dataset)

    assert isinstance(dataset, IterableDataset if streaming else Dataset)
    assert sorted(example["id"].removesuffix(".mp3") for example in examples) == sorted(expected_ids)
    for example in examples:
        assert_schema(example)
    assert {example["language"] for example in examples} == {"de", "fi"}
    assert "1 empty transcript" in caplog.text


def test_hub_local_folder_id_and_dataset_objects(parquet_mirror):
    folder, expected_ids = parquet_mirror
    stream = load_hub_dataset(str(folder), split="dev", language="xx")  # a local path given as the dataset id
    assert {example["language"] for example in stream} == {"xx"}

    # A Dataset object, as the Mozilla Data Collective client returns; VoxPopuli-like columns with class ids.
    mirror = Dataset.from_parquet(str(folder / "data" / "*.parquet"))
    voxpopuli_like = (
        mirror.rename_columns({"path": "audio_id", "sentence": "normalized_text"})
        .remove_columns("locale")
        .add_column("language", [1] * len(mirror))
        .cast_column("language", ClassLabel(names=["en", "de", "fi"]))
    )
    dataset = load_hub_dataset(voxpopuli_like, split="dev", streaming=False)
    examples = all_examples(dataset)
    assert {example["language"] for example in examples} == {"de"}
    assert len(examples) == len(expected_ids)
    unlabeled = load_hub_dataset(voxpopuli_like, columns={"sentence": None})
    assert all(example["sentence"] is None for example in all_examples(unlabeled))
    with pytest.raises(ValueError, match="'words'"):
        load_hub_dataset(voxpopuli_like, columns={"sentence": "words"})
