"""mlpl.audio: mp3/ogg/wav decoded to 16 kHz mono float32 with soundfile + soxr (docs/design.md §8-9)."""

import csv
import pickle

import numpy as np
import pytest
import soundfile

from mlpl.audio import AudioDecodeError, decode_audio_column, load_audio, probe_duration, resample_mono


def tone(frequency, seconds, sampling_rate, amplitude=0.5):
    """float32 (n,) sine."""
    time = np.arange(int(seconds * sampling_rate)) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def dominant_frequency(waveform, sampling_rate):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.argmax(spectrum) * sampling_rate / len(waveform)


@pytest.mark.parametrize(
    "file_format, subtype, sampling_rate",
    [("MP3", None, 48000), ("OGG", "VORBIS", 16000), ("OGG", "VORBIS", 44100), ("FLAC", None, 8000)],
)
def test_decodes_to_16khz_mono_with_the_right_duration_and_pitch(tmp_path, file_format, subtype, sampling_rate):
    path = tmp_path / f"clip.{file_format.lower()}"
    soundfile.write(path, tone(440.0, 1.5, sampling_rate), sampling_rate, format=file_format, subtype=subtype)

    waveform = load_audio(path)

    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) == pytest.approx(1.5 * 16000, abs=16)  # within 1 ms
    assert dominant_frequency(waveform, 16000) == pytest.approx(440.0, abs=2.0)
    assert np.abs(waveform).max() == pytest.approx(0.5, abs=0.05)


def test_bytes_and_paths_and_audio_values_decode_alike(tmp_path):
    path = tmp_path / "clip.mp3"
    soundfile.write(path, tone(300.0, 1.0, 48000), 48000, format="MP3")
    from_path = load_audio(path)

    np.testing.assert_array_equal(load_audio(path.read_bytes()), from_path)
    np.testing.assert_array_equal(decode_audio_column({"bytes": path.read_bytes(), "path": "clip.mp3"}), from_path)
    np.testing.assert_array_equal(decode_audio_column({"bytes": None, "path": str(path)}), from_path)
    already_decoded = {"array": tone(300.0, 1.0, 48000), "sampling_rate": 48000}
    assert len(decode_audio_column(already_decoded)) == 16000


def test_stereo_is_downmixed_by_the_mean(tmp_path):
    left = tone(440.0, 1.0, 16000)
    right = np.zeros_like(left)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")

    np.testing.assert_allclose(load_audio(path), 0.5 * left, atol=1e-6)
    np.testing.assert_allclose(resample_mono(np.stack([left, -left], axis=1), 16000), 0.0, atol=1e-7)


def test_an_undecodable_clip_raises_a_value_error_naming_it(tmp_path):
    path = tmp_path / "broken.mp3"
    path.write_bytes(b"this is not audio" * 50)

    with pytest.raises(AudioDecodeError, match="broken.mp3") as raised:
        load_audio(path)
    assert isinstance(raised.value, ValueError)
    with pytest.raises(AudioDecodeError, match="missing.ogg"):
        load_audio(tmp_path / "missing.ogg")
    with pytest.raises(AudioDecodeError, match="clips/x.mp3"):  # bytes are named by the value's path
        decode_audio_column({"bytes": b"garbage" * 20, "path": "clips/x.mp3"})
    with pytest.raises(AudioDecodeError, match="broken.mp3"):
        probe_duration(path)
    assert pickle.loads(pickle.dumps(AudioDecodeError("x"))).args == ("x",)


def test_bad_target_rate_is_named():
    with pytest.raises(ValueError, match="target_sr=-16000"):
        resample_mono(np.zeros(10, np.float32), 16000, target_sr=-16000)


def test_real_demo_clip_matches_its_common_voice_duration(tiny_demo_corpus):
    folder = tiny_demo_corpus / "cv" / "el"
    with open(folder / "clip_durations.tsv", encoding="utf-8") as table:
        first = next(csv.DictReader(table, delimiter="\t"))
    clip, milliseconds = first["clip"], first["duration[ms]"]
    assert soundfile.info(folder / "clips" / clip).samplerate == 48000

    waveform = load_audio(folder / "clips" / clip)

    assert len(waveform) / 16000 == pytest.approx(int(milliseconds) / 1000, abs=0.002)
    assert probe_duration(folder / "clips" / clip) == pytest.approx(int(milliseconds) / 1000, abs=0.001)
    assert 0.25 < np.abs(waveform).max() <= 1.0 and np.sqrt(np.mean(waveform**2)) > 0.01  # speech, not silence
