# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""SpecAugment as the paper's recipe uses it (docs/design.md §4), following Flashlight's `fl::SpecAugment`
(flashlight/fl/contrib/modules/SpecAugment.cpp) draw for draw:

- no time warp (Flashlight never implemented it; the recipe passes W = 0);
- `num_freq_masks` frequency masks: draw w uniform in [0, F), start uniform so the mask fits;
- `num_time_masks` time masks: cap T' = min(time_mask_width, int(num_frames * time_mask_max_ratio)),
  draw w uniform in [0, T'), start uniform so the mask fits; no time mask at all when T' = 0;
- one set of masks for the whole padded batch (Flashlight masks the batch tensor once);
- masked values set to 0 (`MaskingStrategy::ZERO`; features are normalized per utterance, so 0 is
  each utterance's mean);
- only in training mode, and only from update `start_update` on (Train.cpp, `--saug_start_update`).

Widths: Flashlight masks `fl::range(f0, f0 + w + 1)`, i.e. w + 1 bins for a drawn w, so the widths are
1..F rather than the paper's 0..F-1 (docs/design.md §4 says "< 30"). We follow Flashlight by default, since the
released models were trained that way; `flashlight_mask_widths=False` gives the paper's widths.

`num_frames` for the 10% cap is the batch's padded length in Flashlight, which there always equals the
longest utterance (batches are padded to their longest member). Here we take the longest valid length
from `attention_mask` when given, so padding to a multiple of some size does not widen the masks.
"""

import torch
from torch import nn


class SpecAugment(nn.Module):
    r"""Frequency and time masking of a batch of features, the same masks for every utterance.

    Args:
        num_freq_masks: frequency masks per batch (docs/design.md §4: 2).
        freq_mask_width: F, the exclusive bound of the drawn frequency width (docs/design.md §4: 30).
        num_time_masks: time masks per batch (docs/design.md §4: 2; the paper uses 2 instead of Flashlight's
            LibriSpeech 10 because Common Voice clips are short).
        time_mask_width: T, the exclusive bound of the drawn time width in frames (docs/design.md §4: 50).
        time_mask_max_ratio: p, the time width bound is also at most `int(p * num_frames)` (docs/design.md §4: 0.1).
        start_update: first update (0-based count of finished optimizer updates) that is augmented.
            Flashlight tests `++curBatch >= start` (1-based), i.e. augments one update earlier; the
            difference of one update is immaterial and 0-based counts are what the trainer holds.
        flashlight_mask_widths: a drawn width w masks w + 1 bins/frames (Flashlight); False masks w.
    """

    def __init__(
        self,
        num_freq_masks: int = 2,
        freq_mask_width: int = 30,
        num_time_masks: int = 2,
        time_mask_width: int = 50,
        time_mask_max_ratio: float = 0.1,
        start_update: int = 0,
        flashlight_mask_widths: bool = True,
    ):
        super().__init__()
        # Same argument checks as Flashlight's constructor, with the bad value in the message.
        if num_freq_masks < 0 or num_time_masks < 0:
            raise ValueError(f"mask counts must be >= 0, got {num_freq_masks} and {num_time_masks}")
        if num_freq_masks > 0 and freq_mask_width <= 0:
            raise ValueError(f"freq_mask_width must be > 0 when masking frequencies, got {freq_mask_width}")
        if num_time_masks > 0 and time_mask_width <= 0:
            raise ValueError(f"time_mask_width must be > 0 when masking time, got {time_mask_width}")
        if num_time_masks > 0 and not 0 < time_mask_max_ratio <= 1:
            raise ValueError(f"time_mask_max_ratio must be in (0, 1], got {time_mask_max_ratio}")
        if start_update < 0:
            raise ValueError(f"start_update must be >= 0, got {start_update}")
        self.num_freq_masks = num_freq_masks
        self.freq_mask_width = freq_mask_width
        self.num_time_masks = num_time_masks
        self.time_mask_width = time_mask_width
        self.time_mask_max_ratio = time_mask_max_ratio
        self.start_update = start_update
        self.flashlight_mask_widths = flashlight_mask_widths

    def extra_repr(self) -> str:
        return (
            f"freq: {self.num_freq_masks} x [0, {self.freq_mask_width}), time: {self.num_time_masks} x "
            f"[0, min({self.time_mask_width}, {self.time_mask_max_ratio} T)), start_update={self.start_update}, "
            f"flashlight_mask_widths={self.flashlight_mask_widths}"
        )

    def is_active(self, num_updates: int) -> bool:
        """Whether a training batch at `num_updates` finished updates is augmented."""
        return self.training and num_updates >= self.start_update

    def max_time_mask_width(self, num_frames: int) -> int:
        """Exclusive bound T' of the drawn time width: min(T, int(p * num_frames)) (Flashlight's cap)."""
        return min(self.time_mask_width, int(num_frames * self.time_mask_max_ratio))

    def _draw_spans(self, count: int, width_bound: int, axis_length: int, generator) -> list[tuple[int, int]]:
        """`count` spans `[start, end)` with drawn width w ~ U[0, width_bound), start ~ U[0, length - width]."""
        spans = []
        for _ in range(count):
            drawn = int(torch.randint(0, width_bound, (), generator=generator))
            width = drawn + 1 if self.flashlight_mask_widths else drawn
            start = int(torch.randint(0, axis_length - width + 1, (), generator=generator))
            spans.append((start, start + width))
        return spans

    def sample_mask_spans(
        self, num_frames: int, num_bins: int, generator: torch.Generator | None = None
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Draw one batch's masks: `(frequency_spans, time_spans)`, each a list of `[start, end)` in
        bins / frames. `num_frames` is the longest utterance's length in frames."""
        if self.num_freq_masks and num_bins < self.freq_mask_width:
            raise ValueError(
                f"features have {num_bins} frequency bins, fewer than freq_mask_width={self.freq_mask_width}"
            )
        frequency_spans = self._draw_spans(self.num_freq_masks, self.freq_mask_width, num_bins, generator)
        time_bound = self.max_time_mask_width(num_frames)
        time_spans = self._draw_spans(self.num_time_masks, time_bound, num_frames, generator) if time_bound > 0 else []
        return frequency_spans, time_spans

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        num_updates: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Mask `input_features` `(batch, frames, bins)`; returns a new tensor (the input is untouched),
        or the input itself in eval mode and before `start_update`.

        Args:
            input_features: `(B, T, F)` float features, time-major as the feature extractor returns them.
            attention_mask: optional `(B, T)`, 1 on valid frames; the 10% cap then uses the longest
                valid length instead of the padded T.
            num_updates: optimizer updates finished so far (the trainer's step counter).
            generator: optional `torch.Generator` (CPU) for reproducible masks.
        """
        if not self.is_active(num_updates):
            return input_features
        if input_features.dim() != 3:
            raise ValueError(
                f"expected input_features of shape (batch, frames, bins), got {tuple(input_features.shape)}"
            )
        _, padded_frames, num_bins = input_features.shape
        num_frames = int(attention_mask.sum(dim=1).max()) if attention_mask is not None else padded_frames
        frequency_spans, time_spans = self.sample_mask_spans(num_frames, num_bins, generator)
        # One (T, F) boolean mask broadcast over the batch: the same masks for every utterance.
        masked_frames = torch.zeros(padded_frames, dtype=torch.bool, device=input_features.device)
        masked_bins = torch.zeros(num_bins, dtype=torch.bool, device=input_features.device)
        for start, end in time_spans:
            masked_frames[start:end] = True
        for start, end in frequency_spans:
            masked_bins[start:end] = True
        mask = masked_frames[:, None] | masked_bins[None, :]
        return input_features.masked_fill(mask, 0.0)


__all__ = ["SpecAugment"]
