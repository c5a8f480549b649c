"""mlpl.audio_cache: a clip decoded once per process is read back exactly, keyed by what the audio is, within a budget."""

import numpy as np
import pytest
import soundfile

from mlpl.audio import decode_audio_column
from mlpl.audio_cache import DecodedAudioCache, process_audio_cache, set_audio_cache_budget
from mlpl.data import _records_dataset, map_style_dataset

MB = 1 << 20


def tone(frequency, seconds=1.0, sampling_rate=48000):
    time = np.arange(int(seconds * sampling_rate)) / sampling_rate
    return (0.4 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def write_mp3(path, frequency, seconds=1.0):
    soundfile.write(path, tone(frequency, seconds), 48000, format="MP3")
    return path


class CountingDecoder:
    """The real decoder, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, audio, target_sr):
        self.calls += 1
        return decode_audio_column(audio, target_sr)


@pytest.fixture
def process_cache_off_afterwards():
    yield
    set_audio_cache_budget(0.0)  # the process cache is global: leave it off (and empty) for other tests


def test_a_cached_clip_is_decoded_once_and_read_back_exactly(tmp_path):
    path = write_mp3(tmp_path / "a.mp3", 440.0)
    cache, decoder = DecodedAudioCache(64 * MB), CountingDecoder()

    first = cache.decode(str(path), 16000, decoder)
    first[:100] = 9.0  # what a caller does to its copy does not reach the cache
    second = cache.decode({"path": str(path), "bytes": None}, 16000, decoder)

    np.testing.assert_array_equal(second, decode_audio_column(str(path), 16000))
    assert decoder.calls == 1
    assert cache.stats()["hits"] == 1 and cache.stats()["clips"] == 1
    assert cache.stats()["held_gb"] == pytest.approx(second.nbytes / (1 << 30), abs=1e-3)
    # another target rate is another waveform; `since` counts one run's hits and decodes in a longer-lived process
    before = cache.stats()
    assert len(cache.decode(str(path), 8000, decoder)) == len(second) // 2 and decoder.calls == 2
    assert (cache.stats(since=before)["hits"], cache.stats(since=before)["decodes"], cache.stats(since=before)["clips"]) == (0, 1, 2)


def test_a_file_rewritten_in_place_is_decoded_again(tmp_path):
    path = write_mp3(tmp_path / "a.mp3", 440.0, seconds=1.0)
    cache, decoder = DecodedAudioCache(64 * MB), CountingDecoder()
    before = cache.decode(str(path), 16000, decoder)

    write_mp3(path, 1000.0, seconds=1.5)
    after = cache.decode(str(path), 16000, decoder)

    assert decoder.calls == 2 and len(after) > len(before)
    np.testing.assert_array_equal(after, decode_audio_column(str(path), 16000))


def test_embedded_bytes_are_keyed_by_their_content_not_their_name(tmp_path):
    low, high = (write_mp3(tmp_path / f"{name}.mp3", frequency).read_bytes() for name, frequency in (("low", 300.0), ("high", 2000.0)))
    cache, decoder = DecodedAudioCache(64 * MB), CountingDecoder()

    a = cache.decode({"bytes": low, "path": "clip.mp3"}, 16000, decoder)
    b = cache.decode({"bytes": high, "path": "clip.mp3"}, 16000, decoder)  # same name, other audio
    c = cache.decode({"bytes": bytes(low), "path": "elsewhere.mp3"}, 16000, decoder)  # same audio, other name

    assert decoder.calls == 2
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(c, a)


def test_a_full_budget_still_decodes_exactly_but_holds_no_more(tmp_path):
    first, second = write_mp3(tmp_path / "a.mp3", 440.0), write_mp3(tmp_path / "b.mp3", 880.0)
    one_clip = decode_audio_column(str(first), 16000).nbytes
    cache, decoder = DecodedAudioCache(one_clip + 1000), CountingDecoder()

    cache.decode(str(first), 16000, decoder)
    for _ in range(2):
        np.testing.assert_array_equal(cache.decode(str(second), 16000, decoder), decode_audio_column(str(second), 16000))
    cache.decode(str(first), 16000, decoder)

    assert decoder.calls == 3  # the second clip every time, the first once
    assert cache.stats() | {"held_gb": None} == {"budget_gb": cache.stats()["budget_gb"], "held_gb": None, "clips": 1, "hits": 1, "decodes": 3, "full": True}


def test_an_undecodable_clip_is_not_cached_and_is_skipped_every_time(tmp_path, process_cache_off_afterwards):
    good, bad = write_mp3(tmp_path / "good.mp3", 440.0), tmp_path / "nan.wav"
    samples = tone(440.0, sampling_rate=16000)
    samples[100:200] = np.nan  # its header reads, its samples are refused when decoded
    soundfile.write(bad, samples, 16000, subtype="FLOAT")
    records = [{"id": name, "audio": path, "sentence": "a b", "language": "fi"} for name, path in (("good", good), ("bad", bad))]
    set_audio_cache_budget(0.0)
    dataset = map_style_dataset(_records_dataset(records), 16000, "test clips")
    assert len(dataset) == 2, "the header scan already dropped the bad clip: the decode path is not tested"
    set_audio_cache_budget(0.01)
    hits_before = process_audio_cache().stats()["hits"]

    for _ in range(2):
        batch = dataset[list(range(len(dataset)))]
        assert batch["id"] == ["good"]

    stats = process_audio_cache().stats()
    assert stats["clips"] == 1 and stats["hits"] - hits_before == 1


def test_the_map_style_data_path_reads_through_the_process_cache(tiny_demo_corpus, process_cache_off_afterwards):
    """What the trainer does each epoch (`dataset[indices]`), with `data.audio_cache_gb` > 0: the second epoch
    decodes nothing and gives the same samples as the run without the cache."""
    from mlpl.config import SourceConfig
    from mlpl.trainer_data import load_map_style

    dataset = load_map_style([SourceConfig(kind="common_voice", path=str(tiny_demo_corpus / "cv"), split="train")], "train")
    indices = list(range(len(dataset)))
    set_audio_cache_budget(0.0)
    without = dataset[indices]["audio"]
    set_audio_cache_budget(0.5)
    before = process_audio_cache().stats()
    epochs = [dataset[indices]["audio"] for _ in range(2)]

    after = process_audio_cache().stats(since=before)
    assert len(indices) >= 10 and after["clips"] == len(indices)
    assert (after["decodes"], after["hits"]) == (len(indices), len(indices))
    for epoch in epochs:
        for cached, plain in zip(epoch, without):
            np.testing.assert_array_equal(cached, plain)
    # lowering the budget below what is held empties the cache
    set_audio_cache_budget(0.0)
    assert process_audio_cache().stats()["clips"] == 0


def test_auto_sizes_the_budget_to_the_data_within_a_quarter_of_the_memory():
    from mlpl.audio_cache import GB_PER_HOUR, auto_budget_gb

    gib = 1 << 30
    budget, why = auto_budget_gb(2.0, 0, 16 * gib)
    assert budget == pytest.approx(2.0 * GB_PER_HOUR * 1.05) and "2.00 h" in why
    assert GB_PER_HOUR == pytest.approx(16000 * 4 * 3600 / gib)  # float32 at 16 kHz
    budget, why = auto_budget_gb(200.0, 0, 8 * gib)
    assert budget == pytest.approx(2.0) and "capped at a quarter of the 8.0 GB available" in why
    assert auto_budget_gb(200.0, 0, None)[0] == pytest.approx(2.0)
    budget, why = auto_budget_gb(2.0, 4, 16 * gib)
    assert budget == 0.0 and "num_workers=4" in why


@pytest.mark.parametrize("value, message", [("lots", "expected a number of GB .0 = off. or auto"), ("-1", "must be >= 0")])
def test_a_bad_audio_cache_budget_is_refused_naming_the_key(value, message):
    from mlpl.config import load_config

    with pytest.raises(ValueError, match=f"data.audio_cache_gb.*{message}"):
        load_config(None, [f"data.audio_cache_gb={value}"])
    assert load_config(None, ["data.audio_cache_gb=auto"]).data.audio_cache_gb == "auto"
    assert load_config(None, ["data.audio_cache_gb=0.5"]).data.audio_cache_gb == 0.5


def test_auto_gives_the_run_the_budget_of_its_sets(tiny_demo_corpus, process_cache_off_afterwards):
    from mlpl.audio_cache import GB_PER_HOUR
    from mlpl.config import DataConfig, SourceConfig
    from mlpl.data import example_durations
    from mlpl.trainer_data import load_map_style, size_audio_cache

    train = load_map_style([SourceConfig(kind="common_voice", path=str(tiny_demo_corpus / "cv"), split="train")], "train")
    dev = load_map_style([SourceConfig(kind="common_voice", path=str(tiny_demo_corpus / "cv"), split="dev")], "dev")
    hours = (example_durations(train).sum() + example_durations(dev).sum()) / 3600

    size_audio_cache(DataConfig(audio_cache_gb="auto"), [train, dev, None])
    assert process_audio_cache().budget_bytes == pytest.approx(hours * GB_PER_HOUR * 1.05 * (1 << 30), rel=1e-6)
    size_audio_cache(DataConfig(audio_cache_gb="auto", num_workers=2), [train, dev, None])
    assert process_audio_cache().budget_bytes == 0
    size_audio_cache(DataConfig(audio_cache_gb=0.25), [train])
    assert process_audio_cache().budget_bytes == int(0.25 * (1 << 30))
