"""Clip durations read once, in parallel, and cached beside the run (issue 14.3, training/header_index.py)."""

import os
import shutil

import numpy as np
import pytest

import mlpl.header_index as header_index
from mlpl.data import example_durations, scan_skips
from mlpl.loaders import load_common_voice_folder
from mlpl.header_index import HeaderScan, read_headers


@pytest.fixture()
def release(tiny_demo_corpus, tmp_path):
    """A writable copy of the tiny corpus's Common Voice release (28 training clips in 7 language folders)."""
    return shutil.copytree(tiny_demo_corpus / "cv", tmp_path / "cv")


@pytest.fixture()
def header_reads(monkeypatch):
    """The clips whose header is read in this process."""
    reads = []
    original = header_index.read_header
    monkeypatch.setattr(header_index, "read_header", lambda audio: reads.append(os.fspath(audio)) or original(audio))
    return reads


def test_a_second_load_reads_no_header_and_gets_the_same_durations(release, tmp_path, header_reads):
    scan = HeaderScan(tmp_path / "cache")
    first = load_common_voice_folder(release, "train", header_scan=scan)
    assert len(header_reads) == len(first) == 28
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 7  # one entry per clip folder
    header_reads.clear()
    second = load_common_voice_folder(release, "train", header_scan=scan)
    assert header_reads == []
    np.testing.assert_array_equal(example_durations(second), example_durations(first))
    # Another split of the same folders reads only the clips it adds.
    load_common_voice_folder(release, "dev", header_scan=scan)
    dev_reads = len(header_reads)
    header_reads.clear()
    load_common_voice_folder(release, "dev", header_scan=scan)
    assert dev_reads > 0 and header_reads == []
    assert not any(path.suffix == ".npz" for path in release.rglob("*"))  # nothing written into the dataset


def test_a_changed_folder_is_read_again(release, tmp_path, header_reads):
    scan = HeaderScan(tmp_path / "cache")
    load_common_voice_folder(release, "train", header_scan=scan)
    clips = release / "el" / "clips"
    named = [line.split("\t")[1] for line in (release / "el" / "train.tsv").read_text().splitlines()[1:]]
    shutil.copy(clips / named[0], clips / "added.mp3")  # a new file changes the folder
    stat = os.stat(clips)
    os.utime(clips, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # whatever the clock's granularity
    header_reads.clear()
    load_common_voice_folder(release, "train", header_scan=scan)
    assert sorted(os.path.basename(path) for path in header_reads) == sorted(named)  # el again, no other language


def test_an_unreadable_clip_is_skipped_alike_from_the_cache(release, tmp_path, header_reads):
    named = (release / "fi" / "train.tsv").read_text().splitlines()[1].split("\t")[1]
    (release / "fi" / "clips" / named).write_text("not audio")
    scan = HeaderScan(tmp_path / "cache")
    cold = scan_skips(load_common_voice_folder(release, "train", header_scan=scan))
    header_reads.clear()
    warm = scan_skips(load_common_voice_folder(release, "train", header_scan=scan))
    assert header_reads == [] and cold.counts == warm.counts == {"undecodable": 1}
    assert warm.summary() == cold.summary() and named in warm.summary()


def test_worker_processes_read_what_this_process_reads(release, monkeypatch):
    paths = sorted(map(str, release.glob("*/clips/*.mp3"))) * 3 + [str(release / "missing.mp3")]
    here = read_headers(paths, HeaderScan(workers=1))
    monkeypatch.setattr(header_index, "MIN_CLIPS_FOR_WORKERS", 1)
    monkeypatch.setattr(header_index, "CHUNK_SIZE", 16)
    assert read_headers(paths, HeaderScan(workers=2)) == here
    assert here[-1][0] == "AudioDecodeError" and all(isinstance(value, float) for value in here[:-1])


def test_an_unreadable_cache_file_is_read_again(release, tmp_path, header_reads):
    scan = HeaderScan(tmp_path / "cache")
    load_common_voice_folder(release, "train", languages=["de"], header_scan=scan)
    (entry,) = (tmp_path / "cache").glob("*.npz")
    entry.write_bytes(b"truncated")
    header_reads.clear()
    load_common_voice_folder(release, "train", languages=["de"], header_scan=scan)
    assert len(header_reads) == 7
