"""SpecAugment (training/augment.py): mask geometry per docs/design.md §4 / Flashlight's SpecAugment.cpp."""

import pytest
import torch

from mlpl.augment import SpecAugment


NUM_BINS = 80


def features(batch=3, frames=400, seed=0):
    # Strictly positive so that a zero can only come from a mask.
    return torch.rand(batch, frames, NUM_BINS, generator=torch.Generator().manual_seed(seed)) + 1.0


def masked_region(output):
    """(T, F) bool: where the first utterance was zeroed."""
    return output[0] == 0


def span_union(spans, length):
    region = torch.zeros(length, dtype=torch.bool)
    for start, end in spans:
        region[start:end] = True
    return region


@pytest.mark.parametrize("num_frames", [5, 50, 123, 400, 2000])
def test_span_geometry_over_many_draws(num_frames):
    augment = SpecAugment()  # docs/design.md §4 defaults: 2 x F=30, 2 x T=50, p=0.1
    generator = torch.Generator().manual_seed(0)
    time_bound = min(50, int(0.1 * num_frames))
    frequency_widths, time_widths = [], []
    for _ in range(300):
        frequency_spans, time_spans = augment.sample_mask_spans(num_frames, NUM_BINS, generator)
        assert len(frequency_spans) == 2
        assert len(time_spans) == (2 if time_bound > 0 else 0)  # no time mask when int(0.1 T) == 0
        for start, end in frequency_spans:
            assert 0 <= start < end <= NUM_BINS
            frequency_widths.append(end - start)
        for start, end in time_spans:
            assert 0 <= start < end <= num_frames
            time_widths.append(end - start)
    # Flashlight: drawn w in [0, F) masks w + 1 -> widths 1..F, every value reachable.
    assert min(frequency_widths) == 1 and max(frequency_widths) == 30
    if time_bound:
        assert min(time_widths) == 1 and max(time_widths) == time_bound
        assert max(time_widths) <= 0.1 * num_frames and max(time_widths) <= 50


def test_paper_widths_option_excludes_the_bound():
    augment = SpecAugment(flashlight_mask_widths=False)
    generator = torch.Generator().manual_seed(0)
    widths = []
    for _ in range(300):
        frequency_spans, time_spans = augment.sample_mask_spans(1000, NUM_BINS, generator)
        widths += [(end - start, 30) for start, end in frequency_spans] + [(end - start, 50) for start, end in time_spans]
    assert all(0 <= width < bound for width, bound in widths)
    assert max(width for width, bound in widths if bound == 30) == 29


def test_same_masks_for_every_utterance_and_zeros_exactly_there():
    augment = SpecAugment().train()
    inputs = features()
    generator = torch.Generator().manual_seed(7)
    output = augment(inputs, num_updates=0, generator=generator)
    frequency_spans, time_spans = SpecAugment().sample_mask_spans(400, NUM_BINS, torch.Generator().manual_seed(7))
    expected = span_union(time_spans, 400)[:, None] | span_union(frequency_spans, NUM_BINS)[None, :]
    assert expected.any()
    for row in range(inputs.shape[0]):
        assert torch.equal(output[row] == 0, expected)
        assert torch.equal(output[row][~expected], inputs[row][~expected])
    assert (inputs > 0).all()  # the input tensor itself is not modified


def test_no_op_before_start_update_and_in_eval_mode():
    augment = SpecAugment(start_update=100)
    inputs = features()
    assert augment(inputs, num_updates=99) is inputs
    assert (augment(inputs, num_updates=100) == 0).any()
    augment.eval()
    assert augment(inputs, num_updates=10**6) is inputs


def test_time_cap_uses_the_longest_valid_length_from_the_attention_mask():
    augment = SpecAugment(num_freq_masks=0)
    inputs = features(batch=2, frames=1000)
    attention_mask = torch.zeros(2, 1000, dtype=torch.long)
    attention_mask[0, :100] = 1
    attention_mask[1, :60] = 1
    for seed in range(50):
        output = augment(inputs, attention_mask, num_updates=0, generator=torch.Generator().manual_seed(seed))
        masked_frames = masked_region(output).all(dim=1)
        assert masked_frames.sum() <= 2 * 10  # two masks of at most int(0.1 x 100) frames
        assert not masked_frames[100:].any()  # and they start within the longest utterance


def test_seeded_generator_reproduces_masks():
    augment = SpecAugment()
    inputs = features()
    first = augment(inputs, num_updates=0, generator=torch.Generator().manual_seed(3))
    second = augment(inputs, num_updates=0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    "arguments",
    [
        {"freq_mask_width": 0},
        {"time_mask_width": 0},
        {"time_mask_max_ratio": 0.0},
        {"time_mask_max_ratio": 1.5},
        {"start_update": -1},
    ],
)
def test_bad_arguments_are_rejected(arguments):
    with pytest.raises(ValueError):
        SpecAugment(**arguments)


def test_too_few_frequency_bins_is_an_error():
    with pytest.raises(ValueError, match="frequency bins"):
        SpecAugment()(torch.ones(1, 100, 20), num_updates=0)
