"""MlplFeatureExtractor against a straightforward float64 implementation of Flashlight's mfsc (docs/design.md §1)."""

import math

import numpy as np
import pytest
import soundfile
import torch

from modeling_mlpl import MlplFeatureExtractor


def reference_mfsc(signal, sampling_rate=16000, num_filters=80):
    """Frame by frame, sample by sample, in float64: the formula of docs/design.md §1 written plainly."""
    window_length, hop, n_fft = 400, 160, 512
    signal = np.asarray(signal, dtype=np.float64) * 32768.0
    num_frames = 1 + (len(signal) - window_length) // hop
    hamming = [0.54 - 0.46 * math.cos(2 * math.pi * n / (window_length - 1)) for n in range(window_length)]
    # triangular filters with edges equally spaced in HTK mel, evaluated at each FFT bin's frequency in Hz
    mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)  # noqa: E731
    hertz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = [hertz(mel(sampling_rate / 2) * i / (num_filters + 1)) for i in range(num_filters + 2)]
    bin_hz = [k * sampling_rate / n_fft for k in range(n_fft // 2 + 1)]
    filters = np.zeros((num_filters, len(bin_hz)))
    for j in range(num_filters):
        left, center, right = edges[j], edges[j + 1], edges[j + 2]
        for k, f in enumerate(bin_hz):
            if left < f <= center:
                filters[j, k] = (f - left) / (center - left)
            elif center < f < right:
                filters[j, k] = (right - f) / (right - center)
    features = np.zeros((num_frames, num_filters))
    for t in range(num_frames):
        frame = signal[t * hop : t * hop + window_length]
        emphasized = np.empty(window_length)
        emphasized[0] = frame[0] * (1 - 0.97)
        for n in range(1, window_length):
            emphasized[n] = frame[n] - 0.97 * frame[n - 1]
        spectrum = np.abs(np.fft.rfft(emphasized * np.array(hamming), n=n_fft))
        features[t] = np.log(np.maximum(filters @ spectrum, 1.0))
    features -= features.mean()
    return features / features.std()


@pytest.fixture(scope="module")
def feature_extractor():
    return MlplFeatureExtractor()


@pytest.fixture(scope="module")
def speech_like_signals():
    """A chirp with harmonics and noise (non-stationary, speech-band) and a quiet noise burst."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.3 * 16000)) / 16000
    chirp = 0.3 * np.sin(2 * np.pi * (150 * t + 400 * t**2)) + 0.1 * np.sin(2 * np.pi * (450 * t + 1200 * t**2))
    chirp += 0.01 * rng.standard_normal(len(t))
    quiet = 0.001 * rng.standard_normal(5_123)
    return [chirp.astype(np.float32), quiet.astype(np.float32)]


def test_matches_the_straightforward_implementation(feature_extractor, speech_like_signals):
    output = feature_extractor(speech_like_signals, sampling_rate=16000, return_tensors="pt")
    for row, signal in enumerate(speech_like_signals):
        expected = reference_mfsc(signal)
        valid = int(output["attention_mask"][row].sum())
        assert valid == expected.shape[0] == 1 + (len(signal) - 400) // 160
        actual = output["input_features"][row, :valid].double().numpy()
        np.testing.assert_allclose(actual, expected, atol=1e-4)
        assert torch.all(output["input_features"][row, valid:] == 0)


@pytest.mark.parametrize("frames_per_chunk", [2, 50, 255])
def test_chunked_frames_match_the_reference(speech_like_signals, frames_per_chunk):
    """The batch goes through FFT and filters in chunks of frames (docs/design.md §1, step 4): chunks of one
    frame per utterance, several chunks with a partial last one, and chunks that split between utterances'
    lengths must all give the frame-by-frame reference."""
    extractor = MlplFeatureExtractor()
    extractor.frames_per_chunk = frames_per_chunk
    output = extractor(speech_like_signals, sampling_rate=16000, return_tensors="pt")
    whole = MlplFeatureExtractor()(speech_like_signals, sampling_rate=16000, return_tensors="pt")
    torch.testing.assert_close(output["input_features"], whole["input_features"], rtol=0, atol=1e-5)
    for row, signal in enumerate(speech_like_signals):
        valid = int(output["attention_mask"][row].sum())
        np.testing.assert_allclose(output["input_features"][row, :valid].double().numpy(), reference_mfsc(signal), atol=1e-4)


def test_without_preemphasis_frames_are_only_windowed(speech_like_signals):
    """preemphasis=0 skips the emphasis buffer: the features then equal those of a signal whose frames are the raw samples."""
    extractor = MlplFeatureExtractor(preemphasis=0.0, do_normalize=False)
    extractor.frames_per_chunk = 40
    signal = speech_like_signals[0]
    features = extractor(signal, sampling_rate=16000, return_tensors="pt")["input_features"][0].double().numpy()
    frames = np.lib.stride_tricks.sliding_window_view(signal.astype(np.float64) * 32768.0, 400)[::160]
    spectrum = np.abs(np.fft.rfft(frames * np.hamming(400), n=512))
    expected = np.log(np.maximum(spectrum @ extractor._mel_filters.double().numpy(), 1.0))
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-3)


def test_matches_reference_on_real_recorded_audio(feature_extractor, tiny_demo_corpus):
    clip = sorted((tiny_demo_corpus / "cv").glob("*/clips/*.mp3"))[0]
    audio, rate = soundfile.read(clip, dtype="float32")
    import soxr

    audio = soxr.resample(audio, rate, 16000)
    output = feature_extractor(audio, sampling_rate=16000, return_tensors="np")
    np.testing.assert_allclose(output["input_features"][0].astype(np.float64), reference_mfsc(audio), atol=1e-4)


def test_batch_equals_one_by_one(feature_extractor, speech_like_signals):
    batch = feature_extractor(speech_like_signals, sampling_rate=16000, return_tensors="pt")
    for row, signal in enumerate(speech_like_signals):
        alone = feature_extractor(signal, sampling_rate=16000, return_tensors="pt")["input_features"][0]
        torch.testing.assert_close(batch["input_features"][row, : alone.shape[0]], alone)


def test_unpadded_lists_without_return_tensors(feature_extractor, speech_like_signals):
    output = feature_extractor(speech_like_signals, sampling_rate=16000)
    assert [features.shape for features in output["input_features"]] == [(128, 80), (30, 80)]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda fe: fe(np.zeros(16000, np.float32) + 0.1, sampling_rate=8000), "8000 Hz.*expects 16000"),
        (lambda fe: fe(np.zeros(16000, np.float32), sampling_rate=None), "sampling_rate"),
        (lambda fe: fe(np.zeros(0, np.float32), sampling_rate=16000), "empty"),
        (lambda fe: fe(np.array([0.1, np.nan] * 400, np.float32), sampling_rate=16000), "non-finite"),
        (lambda fe: fe(np.zeros((16000, 2), np.float32), sampling_rate=16000), r"\(16000, 2\).*mono"),
        (lambda fe: fe([np.zeros(800), np.zeros((800, 2))], sampling_rate=16000), r"utterance 1.*\(800, 2\)"),
    ],
)
def test_bad_input_is_a_clear_value_error(feature_extractor, call, message):
    with pytest.raises(ValueError, match=message):
        call(feature_extractor)


def test_signal_shorter_than_a_window_gives_one_frame(feature_extractor):
    output = feature_extractor(np.full(100, 0.1, np.float32), sampling_rate=16000, return_tensors="pt")
    assert output["input_features"].shape == (1, 1, 80)
    assert torch.isfinite(output["input_features"]).all()


def test_save_and_reload_keeps_the_settings(feature_extractor, tmp_path, speech_like_signals):
    changed = MlplFeatureExtractor(mel_floor=2.0, preemphasis=0.9)
    changed.save_pretrained(tmp_path)
    reloaded = MlplFeatureExtractor.from_pretrained(tmp_path)
    assert (reloaded.mel_floor, reloaded.preemphasis) == (2.0, 0.9)
    first = changed(speech_like_signals[0], sampling_rate=16000, return_tensors="pt")["input_features"]
    second = reloaded(speech_like_signals[0], sampling_rate=16000, return_tensors="pt")["input_features"]
    torch.testing.assert_close(first, second)
