# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Flashlight "mfsc" log-mel features, batched in torch.

Every step follows Flashlight's `fl::lib::audio::Mfsc` as configured by the ASR app
(`featParams.usePower = false; useEnergy = false; zeroMeanFrame = false`, docs/design.md §1):

    samples x 32768  ->  frames of 400 (25 ms) every 160 (10 ms), the tail that does not fill
    a frame dropped  ->  pre-emphasis 0.97 inside each frame, first sample x (1 - 0.97)
    ->  Hamming window 0.54 - 0.46 cos(2 pi n / (N - 1))  ->  |FFT_512|  (magnitude, not power)
    ->  80 triangular HTK-mel filters over 0..8000 Hz (unnormalized)  ->  max(., 1)  ->  ln
    ->  one scalar mean and one scalar (population) std over the whole T x 80 matrix.
"""

import math

import numpy as np
import torch

from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature


# Flashlight reads audio as float in [-1, 1] and scales it to the int16 range before framing
# (SpeechUtils.cpp, frameSignal: `float scale = 32768.0`).
INT16_SCALE = 32768.0


def htk_mel_filter_bank(num_filters, num_frequency_bins, sampling_rate, low_frequency=0.0, high_frequency=None):
    """Flashlight's `TriFilterbank` matrix, `(num_frequency_bins, num_filters)`, float64.

    Filter edges are equally spaced on the HTK mel scale 2595 log10(1 + f / 700) and expressed
    in (fractional) FFT bins; filter j rises from edge j to j+1 and falls to j+2. No area
    normalization (TriFilterbank.cpp).
    """
    high_frequency = sampling_rate / 2 if high_frequency is None or high_frequency <= 0 else high_frequency
    min_mel = 2595.0 * math.log10(1.0 + low_frequency / 700.0)
    max_mel = 2595.0 * math.log10(1.0 + high_frequency / 700.0)
    mel_edges = min_mel + np.arange(num_filters + 2) * (max_mel - min_mel) / (num_filters + 1)
    bin_edges = 700.0 * (10.0 ** (mel_edges / 2595.0) - 1.0) * (num_frequency_bins - 1) * 2.0 / sampling_rate
    bins = np.arange(num_frequency_bins, dtype=np.float64)[:, None]
    rising = (bins - bin_edges[None, :-2]) / (bin_edges[1:-1] - bin_edges[:-2])[None, :]
    falling = (bin_edges[None, 2:] - bins) / (bin_edges[2:] - bin_edges[1:-1])[None, :]
    return np.maximum(np.minimum(rising, falling), 0.0)


class MlplFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Log-mel filterbank features exactly as Flashlight's `mfsc` (see the module docstring), computed
    for a whole batch at once in torch.

    Returns `input_features` of shape `(batch, frames, 80)` (time-major, zero on padded frames) and
    `attention_mask` of shape `(batch, frames)`, with `frames = 1 + (n_samples - 400) // 160`.

    Args:
        feature_size (`int`, defaults to 80): number of mel filters.
        sampling_rate (`int`, defaults to 16000): expected sampling rate in Hz.
        win_length (`int`, defaults to 400): analysis window (25 ms).
        hop_length (`int`, defaults to 160): frame stride (10 ms).
        n_fft (`int`, defaults to 512): FFT size (next power of two of the window).
        preemphasis (`float`, defaults to 0.97): pre-emphasis coefficient, applied per frame.
        mel_floor (`float`, defaults to 1.0): filterbank outputs are floored at this value before `log`.
        low_frequency / high_frequency (`float`): filterbank range in Hz (0 and sampling_rate / 2).
        do_normalize (`bool`, defaults to `True`): per-utterance scalar mean / std normalization.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size=80,
        sampling_rate=16000,
        padding_value=0.0,
        win_length=400,
        hop_length=160,
        n_fft=512,
        preemphasis=0.97,
        mel_floor=1.0,
        low_frequency=0.0,
        high_frequency=None,
        do_normalize=True,
        return_attention_mask=True,
        **kwargs,
    ):
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        if n_fft < win_length:
            raise ValueError(f"n_fft={n_fft} must be >= win_length={win_length} (Flashlight uses 512 for 400)")
        if not 0.0 <= preemphasis < 1.0:
            raise ValueError(f"preemphasis={preemphasis} must be in [0, 1) (Flashlight: 0.97)")
        if mel_floor <= 0:
            raise ValueError(f"mel_floor={mel_floor} must be > 0 (Flashlight: 1.0)")
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.preemphasis = preemphasis
        self.mel_floor = mel_floor
        self.low_frequency = low_frequency
        self.high_frequency = sampling_rate / 2 if high_frequency is None else high_frequency
        self.do_normalize = do_normalize
        self._mel_filters = torch.from_numpy(
            htk_mel_filter_bank(feature_size, n_fft // 2 + 1, sampling_rate, low_frequency, self.high_frequency)
        ).to(torch.float32)
        self._window = torch.hamming_window(win_length, periodic=False, dtype=torch.float64).to(torch.float32)

    def to_dict(self):
        output = super().to_dict()
        for cached in ("_mel_filters", "_window"):
            output.pop(cached, None)
        return output

    def num_frames(self, num_samples):
        """Feature frames for `num_samples` samples: `1 + (n - 400) // 160` (at least one frame).

        Flashlight drops a tail that does not fill a window (FeatureParams::numFrames). A signal shorter
        than one window is zero-padded to one frame here rather than giving an empty matrix.
        """
        if isinstance(num_samples, torch.Tensor):
            return 1 + torch.clamp(num_samples - self.win_length, min=0) // self.hop_length
        return 1 + max(int(num_samples) - self.win_length, 0) // self.hop_length

    def __call__(
        self,
        raw_speech,
        sampling_rate=None,
        padding=True,
        return_attention_mask=None,
        return_tensors=None,
        device="cpu",
        **kwargs,
    ):
        """Featurize one waveform or a batch of waveforms.

        Args:
            raw_speech: a 1-D array (one utterance) or a list of 1-D arrays / lists / tensors, mono,
                float in [-1, 1], sampled at `sampling_rate`.
            sampling_rate: the rate of `raw_speech`; anything but 16000 is an error (resample first).
            padding: features are always padded to the longest utterance of the batch.
            return_tensors: "pt", "np" or None (lists).
            device: where to compute (the batch is small enough to move to a GPU in one copy).
        """
        if sampling_rate is None:
            raise ValueError(
                f"{self.__class__.__name__} needs `sampling_rate`: the model expects {self.sampling_rate} Hz mono audio; "
                f"pass sampling_rate={self.sampling_rate} after resampling (e.g. with soxr)."
            )
        if sampling_rate != self.sampling_rate:
            raise ValueError(
                f"received audio sampled at {sampling_rate} Hz, but {self.__class__.__name__} expects "
                f"{self.sampling_rate} Hz; resample it first (e.g. `soxr.resample(audio, {sampling_rate}, {self.sampling_rate})`)."
            )
        waveforms = self._as_waveform_list(raw_speech)
        input_features, attention_mask = self.extract(waveforms, device=device)
        data = {"input_features": input_features}
        if return_attention_mask is None or return_attention_mask:
            data["attention_mask"] = attention_mask
        if return_tensors == "pt":
            return BatchFeature(data=data)
        if return_tensors is None:
            # plain per-utterance arrays without padding, as other feature extractors return
            lengths = attention_mask.sum(-1).tolist()
            return BatchFeature(
                data={key: [row[:n].cpu().numpy() for row, n in zip(value, lengths)] for key, value in data.items()}
            )
        return BatchFeature(data={key: value.cpu().numpy() for key, value in data.items()}, tensor_type=return_tensors)

    def extract(self, waveforms, device="cpu"):
        """Batched features from a list of 1-D float tensors.

        Returns:
            `input_features` `(B, T, 80)` float32, zero on padded frames, and `attention_mask` `(B, T)` long.
        """
        lengths = torch.tensor([max(len(wave), self.win_length) for wave in waveforms], device=device)
        # one concatenation (waveforms and their zero tails) instead of a copy and a fill per utterance
        longest = int(lengths.max())
        pieces = []
        for wave in waveforms:
            pieces.append(wave)
            if len(wave) < longest:
                pieces.append(wave.new_zeros(longest - len(wave)))
        batch = torch.cat(pieces).to(device).view(len(waveforms), longest)
        self._check_finite(batch, waveforms)
        num_frames = self.num_frames(lengths)
        features = self._log_mel(batch, int(num_frames.max()), device)

        attention_mask = (torch.arange(features.shape[1], device=device)[None, :] < num_frames[:, None]).long()
        valid = attention_mask[..., None].to(features.dtype)
        features.mul_(valid)
        if self.do_normalize:
            # One scalar mean / std per utterance over its valid T x 80 values (FeatureTransforms.h, normalize);
            # Flashlight divides only when std > 0 (a constant signal stays at zero).
            count = num_frames.to(features.dtype) * features.shape[-1]
            mean = features.sum(dim=(1, 2)) / count
            features.sub_(mean[:, None, None]).mul_(valid)
            std = torch.linalg.vector_norm(features, dim=(1, 2)) / torch.sqrt(count)
            features.div_(torch.where(std > 0, std, torch.ones_like(std))[:, None, None])
        return features, attention_mask

    # Frames per chunk of the batch (all utterances together). Every temporary of a chunk (the 512-point FFT
    # buffer, its spectrum, the magnitudes) then stays below ~2 MiB: in cache, and below the size at which the
    # allocator maps and unmaps fresh pages on every call, which made whole-batch temporaries slow and bimodal.
    frames_per_chunk = 1024

    def _log_mel(self, batch, total_frames, device):
        """`ln(max(|FFT(window * preemphasized frame)| @ mel, floor))` of a padded `(B, samples)` batch, `(B, T, 80)`.

        Pre-emphasis inside a frame, e[n] = x[n] - 0.97 x[n - 1] for n >= 1, is the whole signal's pre-emphasis read
        through the frame; only e[0] = (1 - 0.97) x[0] is the frame's own. So each chunk of frames emphasizes its
        span of signal once, frames it (a view) and writes the windowed, int16-scaled frames straight into a
        zero-padded FFT buffer that every chunk reuses.
        """
        size, hop, win = batch.shape[0], self.hop_length, self.win_length
        chunk = max(1, self.frames_per_chunk // size)
        window = self._window.to(device) * INT16_SCALE
        first_sample_scale = (1.0 - self.preemphasis) * float(self._window[0]) * INT16_SCALE  # from the CPU copy: no device sync
        mel_filters = self._mel_filters.to(device)
        features = torch.empty(size, total_frames, mel_filters.shape[1], dtype=torch.float32, device=device)
        padded = torch.zeros(size, min(chunk, total_frames), self.n_fft, dtype=torch.float32, device=device)
        emphasized = torch.empty(size, (padded.shape[1] - 1) * hop + win, dtype=torch.float32, device=device)
        for first in range(0, total_frames, chunk):
            count = min(chunk, total_frames - first)
            span = batch[:, first * hop : first * hop + (count - 1) * hop + win]
            signal = span
            if self.preemphasis:
                signal = emphasized[:, : span.shape[1]]
                torch.sub(span[:, 1:], span[:, :-1], alpha=self.preemphasis, out=signal[:, 1:])
            buffer = padded[:, :count]
            torch.mul(signal.unfold(1, win, hop), window, out=buffer[..., :win])
            if self.preemphasis:
                torch.mul(span[:, : (count - 1) * hop + 1 : hop], first_sample_scale, out=buffer[..., 0])
            spectrum = torch.view_as_real(torch.fft.rfft(buffer))
            real, imaginary = spectrum[..., 0], spectrum[..., 1]
            magnitude = torch.addcmul(real * real, imaginary, imaginary).sqrt_()  # |X|, not |X|^2; 3x abs()'s speed
            features[:, first : first + count] = magnitude @ mel_filters
        return features.clamp_(min=self.mel_floor).log_()

    def _as_waveform_list(self, raw_speech):
        """Validate the input and return a list of 1-D float32 tensors."""
        if isinstance(raw_speech, (np.ndarray, torch.Tensor)) and raw_speech.ndim == 1:
            items = [raw_speech]
        elif isinstance(raw_speech, (np.ndarray, torch.Tensor)) and raw_speech.ndim == 2:
            raise ValueError(
                f"received a 2-D array of shape {tuple(raw_speech.shape)}; {self.__class__.__name__} expects mono audio: "
                "one 1-D array per utterance (a list for a batch). Downmix multi-channel audio with `audio.mean(axis=-1)` "
                "or pass a list of 1-D arrays."
            )
        elif isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0 and isinstance(raw_speech[0], (int, float)):
            items = [raw_speech]
        elif isinstance(raw_speech, (list, tuple)):
            items = list(raw_speech)
        else:
            raise ValueError(
                f"received {type(raw_speech).__name__}; expected a 1-D float array or a list of 1-D float arrays "
                f"of {self.sampling_rate} Hz mono audio"
            )
        if not items:
            raise ValueError("received an empty batch; pass at least one waveform")
        waveforms = []
        for index, item in enumerate(items):
            wave = torch.as_tensor(np.asarray(item) if isinstance(item, (list, tuple)) else item)
            if wave.ndim != 1:
                raise ValueError(
                    f"utterance {index} has shape {tuple(wave.shape)}; expected a 1-D mono waveform. "
                    "Downmix multi-channel audio with `audio.mean(axis=-1)` first."
                )
            if wave.numel() == 0:
                raise ValueError(f"utterance {index} is empty (0 samples); expected at least one sample of audio")
            waveforms.append(wave.to(torch.float32))
        return waveforms

    @staticmethod
    def _check_finite(batch, waveforms):
        """One check over the padded batch (per-utterance checks are four small ops each); names the first bad one."""
        if bool(torch.isfinite(batch).all()):
            return
        index = int((~torch.isfinite(batch)).any(dim=1).nonzero()[0])
        bad, total = int((~torch.isfinite(waveforms[index])).sum()), waveforms[index].numel()
        raise ValueError(
            f"utterance {index} has {bad} non-finite samples (NaN or inf) out of {total}; "
            "expected finite floats in [-1, 1]; check the decoder or drop the clip"
        )


__all__ = ["MlplFeatureExtractor", "htk_mel_filter_bank"]
