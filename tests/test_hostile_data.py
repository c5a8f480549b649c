"""Bad audio and bad tables at the data layer (issue 13.2, 13.3, 13.9): each a counted skip naming the file,
or an error naming the file and the fix; nothing hangs, nothing trains on a clip it cannot learn from."""

import logging
import shutil

import numpy as np
import pytest
import soundfile

from mlpl.audio import NonFiniteAudioError, TruncatedAudioError, load_audio
from mlpl.data import (
    SKIP_BAD_ROW,
    SKIP_NON_FINITE,
    SKIP_TOO_LONG,
    SKIP_TOO_SHORT,
    SKIP_TRUNCATED,
    ctc_frames_needed,
    ctc_output_frames,
    drop_long_clips,
    scan_skips,
)
from mlpl.loaders import (
    load_common_voice_folder,
)

ROW = "x\t{path}\t1\t{sentence}\t\t2\t0\t\t\t\t\ten\t\n"


def nan_wav(path, seconds=1.0):
    samples = np.full(int(seconds * 16000), 0.1, np.float32)
    samples[100:2100] = np.nan
    soundfile.write(path, samples, 16000, subtype="FLOAT")
    return path


def half_of(source, destination):
    data = source.read_bytes()
    destination.write_bytes(data[: len(data) // 2])
    return destination


@pytest.fixture
def english(tiny_demo_corpus, tmp_path):
    folder = tmp_path / "en"
    shutil.copytree(tiny_demo_corpus / "cv" / "en", folder)
    return folder


def add_rows(folder, *rows, split="train"):
    with open(folder / f"{split}.tsv", "a", encoding="utf-8") as table:
        for row in rows:
            table.write(row)


def test_load_audio_refuses_nan_and_truncated_clips_by_name(english, tmp_path):
    nan = nan_wav(tmp_path / "nan.wav")
    with pytest.raises(NonFiniteAudioError, match=f"{nan}.* 2000 non-finite samples"):
        load_audio(nan)
    clip = next((english / "clips").glob("*.mp3"))
    truncated = half_of(clip, tmp_path / "half.mp3")
    with pytest.raises(TruncatedAudioError, match=f"{truncated} is truncated: its header announces"):
        load_audio(truncated)
    assert load_audio(clip).size > 0  # a whole mp3 is not "truncated" (decoder padding is within the margin)


def test_nan_truncated_and_too_short_clips_are_counted_skips_naming_the_file(english, caplog):
    good = len((english / "train.tsv").read_text().splitlines()) - 1
    nan_wav(english / "clips" / "nan.wav")
    half_of(next((english / "clips").glob("*.mp3")), english / "clips" / "half.mp3")
    soundfile.write(english / "clips" / "blip.wav", np.full(160, 0.1, np.float32), 16000)  # 10 ms
    add_rows(
        english,
        ROW.format(path="nan.wav", sentence="A sentence."),
        ROW.format(path="half.mp3", sentence="Another sentence."),
        ROW.format(path="blip.wav", sentence="Far too long for ten milliseconds."),
    )
    with caplog.at_level(logging.WARNING, logger="mlpl.data"):
        dataset = load_common_voice_folder(english, "train")
        examples = dataset.__getitems__(list(range(len(dataset))))

    assert len(examples) == good and {e["id"] for e in examples}.isdisjoint({"nan", "half", "blip"})
    # The header scan's skips stay readable from the dataset (a summary counting only what it read omits them).
    scanned = scan_skips(dataset.select(range(2)))
    assert (scanned.seen, scanned.counts) == (good + 3, {SKIP_TOO_SHORT: 1})
    assert f"1 {SKIP_TOO_SHORT} (e.g. {english / 'clips' / 'blip.wav'}: 0.010 s gives 1 output frames" in caplog.text
    assert f"{SKIP_NON_FINITE}: {english / 'clips' / 'nan.wav'}" in caplog.text
    assert f"{SKIP_TRUNCATED}: {english / 'clips' / 'half.mp3'}" in caplog.text


def test_ctc_needs_a_frame_per_token_and_a_blank_between_repeats():
    assert ctc_frames_needed("ab  c") == 4 and ctc_frames_needed("aa") == 3 and ctc_frames_needed("a b") == 3
    assert ctc_output_frames(1.0) == 33 and ctc_output_frames(0.01) == 1


def test_a_table_without_sentence_or_path_is_an_error_naming_it(english):
    table = english / "train.tsv"
    header, *rows = table.read_text().splitlines()
    for dropped in ("sentence", "path"):
        columns = header.split("\t")
        keep = [i for i, name in enumerate(columns) if name != dropped]
        table.write_text("\n".join("\t".join(line.split("\t")[i] for i in keep) for line in [header, *rows]) + "\n")
        with pytest.raises(ValueError, match=f"{table}: no '{dropped}' column"):
            load_common_voice_folder(english, "train")


def test_a_short_row_is_a_counted_skip_naming_file_and_line(english, caplog):
    lines = len((english / "train.tsv").read_text().splitlines())
    add_rows(english, "only-a-client-id\n")
    with caplog.at_level(logging.WARNING, logger="mlpl.data"):
        dataset = load_common_voice_folder(english, "train")
    assert len(dataset) == lines - 1
    assert f"1 {SKIP_BAD_ROW} (e.g. {english / 'train.tsv'}:{lines + 1}: no audio path" in caplog.text


def test_languages_not_in_the_data_are_an_error_naming_what_is_there(tiny_demo_corpus):
    with pytest.raises(ValueError, match=r"has no utterance in languages \['xx'\]; it has \['bg', 'de', 'el', 'en', 'es', 'fi', 'ru'\]"):
        load_common_voice_folder(tiny_demo_corpus / "cv", "train", languages=["fi", "xx"])


def test_clips_over_the_length_limit_are_counted_skips_naming_the_option(english, caplog):
    soundfile.write(english / "clips" / "long.wav", np.zeros(16000 * 600, np.int16), 16000)  # 10 minutes
    add_rows(english, ROW.format(path="long.wav", sentence="Ten minutes of silence."))
    dataset = load_common_voice_folder(english, "train")
    with caplog.at_level(logging.WARNING, logger="mlpl.data"):
        kept = drop_long_clips(dataset, 60.0, "train data", "data.max_clip_seconds")
    assert len(kept) == len(dataset) - 1 and "long" not in set(kept.with_format(None)["id"])
    assert f"1 {SKIP_TOO_LONG} (e.g. {english / 'clips' / 'long.wav'}: 600.0 s > data.max_clip_seconds=60 s)" in caplog.text
    assert kept[0]["audio"].dtype == np.float32  # still decoded on access


def test_an_epoch_without_a_usable_batch_is_an_error_not_a_hang():
    from mlpl.trainer import epoch_batches

    class Sampler:
        seed, epoch = 0, 0

        def __iter__(self):
            return iter([[0], [1]])

        def __len__(self):
            return 2

        def set_epoch(self, epoch):
            self.epoch = epoch

    batches = epoch_batches([{"id": "a"}, {"id": "b"}], Sampler(), lambda examples: None, 0, {"consumed": 0})
    with pytest.raises(ValueError, match="no usable batch"):
        next(batches)
