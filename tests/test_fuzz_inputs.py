"""A folder of mixed bad files through train.py, evaluate.py and pseudo_label.py (issue 13, "Done when").

The folder is a Common Voice release (one language) whose train.tsv lists the demo corpus's good English
clips, two odd but good ones (stereo, 8 kHz) and every kind of bad input: a zero-byte file, a text file, a
float WAV with NaN samples, a truncated mp3, a 10 ms clip, a 10-minute clip, a file that is missing, and
TSV rows without an audio path. Each script must finish (no crash, no hang: a subprocess timeout), name
every bad file in its skip warnings, and use every good file. The 10-minute clip is bad for training
(skipped over data.max_clip_seconds) and fine for evaluation and pseudo-labeling (cropped and stitched).
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import soxr

from test_trainer import ENVIRONMENT, REPOSITORY, write_config
from mlpl.audio import load_audio

ROW = "client\t{path}\t{n}\t{sentence}\t\t2\t0\t\t\t\t\ten\t\n"
TIMEOUT = 300


@pytest.fixture(scope="module")
def fuzz(tiny_demo_corpus, tmp_path_factory):
    """(release folder, good clip ids, bad file -> where it is reported)."""
    root = tmp_path_factory.mktemp("fuzz") / "release"
    folder = root / "en"
    shutil.copytree(tiny_demo_corpus / "cv" / "en", folder)
    clips = folder / "clips"
    header, *rows = (folder / "train.tsv").read_text(encoding="utf-8").splitlines()
    good = [line.split("\t")[1].rsplit(".", 1)[0] for line in rows]
    first_clip, first_sentence = rows[0].split("\t")[1], rows[0].split("\t")[3]
    waveform = load_audio(clips / first_clip)

    soundfile.write(clips / "stereo.wav", np.stack([waveform, 0.5 * waveform], axis=1), 16000)
    soundfile.write(clips / "eight_khz.wav", soxr.resample(waveform, 16000, 8000), 8000)
    (clips / "zero.mp3").write_bytes(b"")
    (clips / "text.mp3").write_text("this is not audio, just a text file with an mp3 name\n" * 20)
    nan = waveform.copy()
    nan[1000:3000] = np.nan
    soundfile.write(clips / "nan.wav", nan, 16000, subtype="FLOAT")
    data = (clips / first_clip).read_bytes()
    (clips / "half.mp3").write_bytes(data[: len(data) // 2])
    soundfile.write(clips / "blip.wav", waveform[:160], 16000)  # 10 ms
    soundfile.write(clips / "long.wav", np.tile(waveform, int(np.ceil(600 * 16000 / waveform.size)))[: 600 * 16000], 16000)

    extra = [
        ("stereo.wav", first_sentence), ("eight_khz.wav", first_sentence), ("zero.mp3", "Zero bytes."),
        ("text.mp3", "A text file."), ("nan.wav", first_sentence), ("half.mp3", first_sentence),
        ("blip.wav", "Much too long a sentence for ten milliseconds."), ("long.wav", first_sentence),
        ("missing.mp3", "This file does not exist."),
    ]  # fmt: skip
    lines = [header, *rows] + [ROW.format(path=path, n=i, sentence=sentence).rstrip("\n") for i, (path, sentence) in enumerate(extra)]
    lines += ["only-a-client-id", "client\t\t99\tNo path here.\t\t2\t0\t\t\t\t\ten\t"]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = folder / "train.tsv"
    bad = {
        "zero.mp3": str(clips / "zero.mp3"), "text.mp3": str(clips / "text.mp3"), "nan.wav": str(clips / "nan.wav"),
        "half.mp3": str(clips / "half.mp3"), "blip.wav": str(clips / "blip.wav"), "missing.mp3": str(clips / "missing.mp3"),
        "short row": f"{table}:{len(lines) - 1}", "row without a path": f"{table}:{len(lines)}",
    }  # fmt: skip
    return root, good + ["stereo", "eight_khz"], bad


def run(*command):
    completed = subprocess.run([sys.executable, *command], cwd=REPOSITORY, env=ENVIRONMENT, capture_output=True, text=True, timeout=TIMEOUT)
    assert completed.returncode == 0, f"{command[0]} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-6000:]}"
    return completed.stderr


def skip_lines(log):
    return [line for line in log.splitlines() if "skipped" in line]


def assert_every_bad_file_named(log, bad):
    skips = "\n".join(skip_lines(log))
    missing = {what: where for what, where in bad.items() if where not in skips}
    assert not missing, f"not named in any skip warning: {missing}\n{skips}"


@pytest.fixture(scope="module")
def trained(fuzz, tmp_path_factory):
    root, _, _ = fuzz
    folder = tmp_path_factory.mktemp("fuzz_train")
    config = write_config(
        folder / "train.yaml", root,
        data={"train": [{"kind": "common_voice", "path": str(root), "split": "train"}], "max_batch_seconds": 200},
        train={"max_updates": 2, "save_every": 2, "log_every": 1},
    )  # fmt: skip
    log = run("scripts/train.py", "--config", str(config), f"train.output_dir={folder / 'run'}")
    return folder / "run", log


@pytest.mark.slow
def test_train_skips_and_names_every_bad_file_and_uses_the_good_ones(fuzz, trained):
    _, good, bad = fuzz
    output, log = trained
    assert_every_bad_file_named(log, {**bad, "long.wav": "long.wav: 600.0 s > data.max_clip_seconds=60 s"})
    assert f"train: {len(good) + 2} utterances" in log  # the good ones, + nan and half (found when decoded)
    for name in good:
        assert not any(f"/{name}." in line for line in skip_lines(log)), name
    assert json.loads((output / "train_summary.json").read_text())["num_updates"] == 2


@pytest.mark.slow
def test_evaluate_skips_and_names_every_bad_file_and_scores_the_good_ones(fuzz, trained, tmp_path):
    root, good, bad = fuzz
    output, _ = trained
    log = run("scripts/evaluate.py", "--model", str(output / "final"), "--data", str(root), "--split", "train",
              "--output-dir", str(tmp_path / "eval"), "--no-plots", "--device", "cpu")  # fmt: skip
    assert_every_bad_file_named(log, bad)
    scored = {json.loads(line)["id"] for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()}
    assert scored == set(good) | {"long"}  # the 10-minute clip too: cropped and stitched


@pytest.mark.slow
def test_pseudo_label_skips_and_names_every_bad_file_and_labels_the_good_ones(fuzz, trained, tmp_path):
    root, good, bad = fuzz
    output, _ = trained
    log = run("scripts/pseudo_label.py", "--model", str(output / "final"), "--data", str(root), "--source-split", "train",
              "--output-dir", str(tmp_path / "pl"))  # fmt: skip
    assert_every_bad_file_named(log, bad)
    summary = json.loads((tmp_path / "pl" / "summary.json").read_text())
    # Transcribed: every good clip and the 10-minute one (cropped); nan and half counted as unreadable.
    assert summary["dropped"]["unreadable audio"] == 2 and sorted(summary["dropped_examples"]["unreadable audio"]) == ["half", "nan"]
    # ... and the clips the header scan dropped (zero-byte, text, missing, too short) are counted too: every
    # clip the table lists is accounted for (its two malformed rows name no clip; the log names them by line)
    listed = len((root / "en" / "train.tsv").read_text(encoding="utf-8").splitlines()) - 1 - 2
    assert summary["utterances"] == listed, (summary["utterances"], listed, summary["dropped"])
