"""Audio decoding for every data source: soundfile to decode, soxr to resample (docs/design.md §8-9).

datasets >= 4 decodes audio only through torchcodec (CUDA + FFmpeg wheels) and torchaudio lost
its I/O in 2.9, so neither is used here (docs/design.md §8-9). libsndfile >= 1.1 reads mp3 (Common Voice)
and ogg/vorbis (VoxPopuli) as well as flac/wav, and soxr resamples in a few milliseconds per
clip. Datasets hand audio over as `Audio(decode=False)` values, `{"path": str | None,
"bytes": bytes | None}`, which `decode_audio_column` turns into a waveform.
"""

from __future__ import annotations

import io
import os
from typing import Any, Union

import numpy as np
import soundfile
import soxr

# docs/design.md §1: the model's features are computed on 16 kHz mono input.
SAMPLING_RATE = 16000

# What can be decoded: a file path, the encoded bytes of a file, or an open binary file object.
AudioSource = Union[str, os.PathLike, bytes, bytearray, io.IOBase]


class AudioDecodeError(ValueError):
    """A clip that soundfile cannot decode. The message names the clip and what to check."""


class NonFiniteAudioError(AudioDecodeError):
    """A clip that decodes to NaN or infinite samples (a float WAV written from a broken computation)."""


class TruncatedAudioError(AudioDecodeError):
    """A clip whose decoded length is far below its header's (a file cut short by a failed copy)."""


# A clip that decodes to less than this fraction of the length its header announces is truncated. Above
# it, the difference is what decoders legitimately disagree on (mp3 encoder delay and padding: milliseconds;
# a frame count estimated from the file size where an mp3 has no Xing/VBRI header: a few percent).
TRUNCATION_RATIO = 0.8


def check_finite(waveform: np.ndarray, name: str) -> np.ndarray:
    """`waveform` unchanged, or NonFiniteAudioError naming the clip and how many samples are NaN / inf."""
    bad = waveform.size - int(np.isfinite(waveform).sum())
    if bad:
        raise NonFiniteAudioError(
            f"clip {name} has {bad} non-finite samples (NaN or inf) out of {waveform.size}; the file is damaged: "
            "re-export it, or leave it out of the data"
        )
    return waveform


def describe_audio_source(source: Any) -> str:
    """A short human name for a clip, for error messages and skip reports."""
    if isinstance(source, dict):
        if source.get("path"):
            return str(source["path"])
        if source.get("bytes") is not None:
            return f"<{len(source['bytes'])} bytes>"
        return "<audio value with neither path nor bytes>"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return repr(source)


def _check_sampling_rate(target_sr: int) -> None:
    if not isinstance(target_sr, (int, np.integer)) or target_sr <= 0:
        raise ValueError(f"target_sr={target_sr!r} must be a positive integer number of samples per second, e.g. 16000")


def _open(source: AudioSource):
    """What soundfile accepts: paths as they are, raw bytes wrapped in a file object."""
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(source)
    return source


def resample_mono(waveform: np.ndarray, sampling_rate: int, target_sr: int = SAMPLING_RATE) -> np.ndarray:
    """Downmix and resample.

    Args:
        waveform: `(n_samples,)` or `(n_samples, n_channels)` samples in [-1, 1].
        sampling_rate: rate of `waveform` in Hz.
        target_sr: rate of the result in Hz.

    Returns:
        float32 `(round(n_samples * target_sr / sampling_rate),)`.
    """
    _check_sampling_rate(target_sr)
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 2:
        # Stereo (or more) is averaged rather than taking one channel: a channel can be silent.
        waveform = waveform.mean(axis=1, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"waveform has shape {waveform.shape}; expected (n_samples,) or (n_samples, n_channels)")
    if sampling_rate != target_sr and waveform.size > 0:
        # soxr "HQ" (the default) is transparent for speech and runs at > 1000x real time per core.
        waveform = soxr.resample(waveform, sampling_rate, target_sr)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def load_audio(source: AudioSource, target_sr: int = SAMPLING_RATE, *, name: str | None = None) -> np.ndarray:
    """Decode a clip to a mono float32 waveform at `target_sr`.

    Args:
        source: a path, the encoded bytes of a file (mp3, ogg, flac, wav...) or a binary file object.
        target_sr: sampling rate of the result in Hz (16000 for the model, docs/design.md §1).
        name: how error messages call the clip (default: its path, or its size for bytes).

    Returns:
        float32 `(n_samples,)` in [-1, 1], `n_samples = round(duration_s * target_sr)`. A file with no
        samples gives an array of length 0 (callers decide whether that is an error).

    Raises:
        AudioDecodeError (a ValueError): the clip is missing or not audio; its subclasses
        TruncatedAudioError (decodes to under 80 % of its header's length) and NonFiniteAudioError
        (NaN or inf samples).
    """
    _check_sampling_rate(target_sr)
    name = name or describe_audio_source(source)
    try:
        with soundfile.SoundFile(_open(source)) as sound:
            announced, sampling_rate = sound.frames, sound.samplerate
            # always_2d: one code path for mono and multi-channel files, (n_samples, n_channels).
            waveform = sound.read(dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile reports corrupt files in several exception types
        raise AudioDecodeError(
            f"clip {name} could not be decoded ({type(error).__name__}: {error}); "
            "check that the file exists and is a complete mp3/ogg/flac/wav file"
        ) from error
    if len(waveform) < TRUNCATION_RATIO * announced:
        raise TruncatedAudioError(
            f"clip {name} is truncated: its header announces {announced / sampling_rate:.2f} s but only "
            f"{len(waveform) / sampling_rate:.2f} s decode (the file was cut short); copy it again from its source"
        )
    return resample_mono(check_finite(waveform, name), sampling_rate, target_sr)


def probe_duration(source: AudioSource, *, name: str | None = None) -> float:
    """Duration in seconds read from the file header (no decoding: ~0.1 ms for an mp3, ~1 ms for an ogg).

    Raises:
        AudioDecodeError: the header cannot be read.
    """
    try:
        info = soundfile.info(_open(source))
    except Exception as error:
        raise AudioDecodeError(
            f"clip {name or describe_audio_source(source)} has no readable audio header ({type(error).__name__}: {error}); "
            "check that the file exists and is a complete mp3/ogg/flac/wav file"
        ) from error
    return info.frames / info.samplerate


def decode_audio_column(audio: Any, target_sr: int = SAMPLING_RATE) -> np.ndarray:
    """Decode one value of a datasets audio column.

    Args:
        audio: an `Audio(decode=False)` value `{"path": str | None, "bytes": bytes | None}` (bytes win when
            both are set: parquet mirrors embed the clip and keep only its original name as path); an already
            decoded `{"array", "sampling_rate"}` value; or a plain path.
        target_sr: sampling rate of the result in Hz.

    Returns:
        float32 `(n_samples,)` mono at `target_sr`.
    """
    if isinstance(audio, dict) and audio.get("array") is not None:
        waveform = check_finite(np.asarray(audio["array"], dtype=np.float32), describe_audio_source(audio))
        return resample_mono(waveform, int(audio["sampling_rate"]), target_sr)
    source = audio_value_source(audio)
    if source is None:
        raise AudioDecodeError(f"audio value {audio!r} has neither bytes nor a path; nothing to decode")
    return load_audio(source, target_sr, name=describe_audio_source(audio))


def audio_value_source(audio: Any) -> AudioSource:
    """The thing to open for an `Audio(decode=False)` value or a path: its bytes if any, else its path."""
    if isinstance(audio, dict):
        return audio["bytes"] if audio.get("bytes") is not None else audio.get("path")
    return audio


__all__ = [
    "SAMPLING_RATE",
    "AudioDecodeError",
    "NonFiniteAudioError",
    "TRUNCATION_RATIO",
    "TruncatedAudioError",
    "check_finite",
    "audio_value_source",
    "decode_audio_column",
    "describe_audio_source",
    "load_audio",
    "probe_duration",
    "resample_mono",
]
