"""Duration batching (training/batching.py): Flashlight's packing rule, the map-style sampler's
per-epoch shuffling, sharding and resume, and the stream bucketer's sharding and resume."""

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset

from mlpl.batching import (
    DurationBatchSampler,
    DurationBucketingStream,
    even_out_batches,
    pack_by_duration,
)


MAX_BATCH_SECONDS = 20.0


def random_durations(count=200, seed=0, low=0.5, high=12.0):
    return np.random.default_rng(seed).uniform(low, high, count).round(3)


def tiny_dataset(count=200, num_shards=None, seed=0):
    """A datasets Dataset of schema-like rows (no audio: batching reads only ids and durations)."""
    durations = random_durations(count, seed)
    dataset = Dataset.from_dict({"id": [f"utt{i:04d}" for i in range(count)], "duration": durations.tolist()})
    return dataset if num_shards is None else dataset.to_iterable_dataset(num_shards=num_shards)


def batch_ids(batches):
    return [[example["id"] for example in batch] for batch in batches]


# ---- the packing rule -----------------------------------------------------------------------


def test_pack_by_duration_matches_flashlight_example():
    # Sorted longest first: 6 | 5 4 (2 x 5 = 10 <= 10) | 3 2 1 (3 x 3 = 9; 4 x 3 = 12 > 10).
    durations = [1, 2, 3, 4, 5, 6]
    assert pack_by_duration(durations, 10) == [[5], [4, 3], [2, 1, 0]]


def test_pack_by_duration_keeps_a_last_batch_that_fills_the_limit_exactly():
    # Flashlight keeps the last batch only when count x max < limit (strict); we always keep it.
    assert pack_by_duration([5.0, 5.0], 10) == [[0, 1]]


def test_pack_by_duration_invariants():
    durations = random_durations(500, seed=1)
    batches = pack_by_duration(durations, MAX_BATCH_SECONDS)
    assert sorted(index for batch in batches for index in batch) == list(range(500))
    for batch, following in zip(batches, batches[1:] + [None]):
        longest = durations[batch].max()
        assert len(batch) * longest <= MAX_BATCH_SECONDS
        assert list(durations[batch]) == sorted(durations[batch], reverse=True)
        if following is not None:
            # greedy: the next utterance did not fit
            assert (len(batch) + 1) * longest > MAX_BATCH_SECONDS
            assert durations[following[0]] <= durations[batch[-1]]


def test_pack_by_duration_oversized_utterance_gets_its_own_batch_and_is_logged(caplog):
    durations = [3.0, 45.0, 4.0, 2.0]
    with caplog.at_level(logging.WARNING, logger="mlpl.batching"):
        batches = pack_by_duration(durations, MAX_BATCH_SECONDS, names=["a", "long-one", "c", "d"])
    assert batches[0] == [1]
    assert sorted(index for batch in batches for index in batch) == [0, 1, 2, 3]
    assert "long-one" in caplog.text and "45.00 s" in caplog.text


def test_pack_by_duration_max_batch_size():
    batches = pack_by_duration([1.0] * 10, 100.0, max_batch_size=4)
    assert [len(batch) for batch in batches] == [4, 4, 2]


@pytest.mark.parametrize(
    "durations, limit, max_batch_size",
    [([1.0], 0.0, None), ([1.0, float("nan")], 10.0, None), ([1.0, -2.0], 10.0, None), ([1.0], 10.0, 0)],
)
def test_pack_by_duration_rejects_bad_input(durations, limit, max_batch_size):
    with pytest.raises(ValueError):
        pack_by_duration(durations, limit, max_batch_size)


def test_even_out_batches_splits_the_fullest_batches():
    batches = [[0], [1, 2, 3, 4], [5, 6], [7, 8, 9]]
    evened = even_out_batches(batches, 3)
    assert len(evened) == 6
    assert [index for batch in evened for index in batch] == list(range(10))  # order kept, halves adjacent
    assert max(len(batch) for batch in evened) <= 2
    assert even_out_batches(batches, 2) == batches  # already divisible: unchanged


# ---- map-style sampler ----------------------------------------------------------------------


def test_sampler_shuffles_fixed_batches_per_epoch():
    sampler = DurationBatchSampler(random_durations(), MAX_BATCH_SECONDS, seed=5)
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    assert sorted(map(tuple, epoch0)) == sorted(map(tuple, epoch1)) == sorted(map(tuple, sampler.batches))
    again = DurationBatchSampler(random_durations(), MAX_BATCH_SECONDS, seed=5)
    again.set_epoch(1)
    assert list(again) == epoch1  # same seed + epoch -> same order
    assert len(sampler) == len(epoch0)


@pytest.mark.parametrize("num_replicas", [2, 3, 4, 7])
def test_sampler_shards_cover_every_example_once(num_replicas):
    durations = random_durations(203)
    shares = []
    for rank in range(num_replicas):
        sampler = DurationBatchSampler(durations, MAX_BATCH_SECONDS, seed=1, num_replicas=num_replicas, rank=rank)
        sampler.set_epoch(2)
        shares.append(list(sampler))
    assert len({len(share) for share in shares}) == 1  # same number of steps on every process
    seen = [index for share in shares for batch in share for index in batch]
    assert sorted(seen) == list(range(203))


def test_sampler_drop_last_leaves_out_the_remainder_batches():
    durations = random_durations(101)
    num_batches = len(pack_by_duration(durations, MAX_BATCH_SECONDS))
    assert num_batches % 3, "test needs a batch count that 3 does not divide"
    shares = []
    for rank in range(3):
        sampler = DurationBatchSampler(durations, MAX_BATCH_SECONDS, num_replicas=3, rank=rank, drop_last=True)
        shares.append(list(sampler))
    assert [len(share) for share in shares] == [num_batches // 3] * 3
    seen = [index for share in shares for batch in share for index in batch]
    assert len(seen) == len(set(seen)) < 101


def test_sampler_repeats_batches_only_when_too_few_examples(caplog):
    with caplog.at_level(logging.WARNING, logger="mlpl.batching"):
        shares = [
            list(DurationBatchSampler([1.0, 2.0], MAX_BATCH_SECONDS, num_replicas=4, rank=rank)) for rank in range(4)
        ]
    assert "repeated" in caplog.text
    assert all(len(share) == 1 for share in shares)
    assert {index for share in shares for batch in share for index in batch} == {0, 1}


def test_sampler_drives_a_dataloader_over_a_datasets_dataset():
    dataset = tiny_dataset()
    sampler = DurationBatchSampler.from_dataset(dataset, MAX_BATCH_SECONDS, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=lambda batch: batch)
    batches = list(loader)
    assert sorted(i for batch in batch_ids(batches) for i in batch) == sorted(dataset["id"])
    assert all(len(batch) * max(e["duration"] for e in batch) <= MAX_BATCH_SECONDS for batch in batches)


@pytest.mark.parametrize("consumed", [0, 1, 7, 100])
def test_sampler_resume_continues_with_the_same_batches(consumed):
    durations = random_durations()

    def make():
        return DurationBatchSampler(durations, MAX_BATCH_SECONDS, seed=11, num_replicas=2, rank=1)

    uninterrupted = make()
    uninterrupted.set_epoch(3)
    expected = list(uninterrupted)
    consumed = min(consumed, len(expected))

    interrupted = make()
    interrupted.set_epoch(3)
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(consumed)]
    state = interrupted.state_dict()
    assert (state["epoch"], state["position"]) == (3, consumed)

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a training loop calls this again on resume: must not reset the position
    assert head + list(resumed) == expected
    resumed.set_epoch(4)  # the following epoch starts from its beginning
    assert len(list(resumed)) == len(expected)


def test_sampler_state_dict_with_loop_count_and_mismatch_errors():
    durations = random_durations()
    sampler = DurationBatchSampler(durations, MAX_BATCH_SECONDS, seed=0)
    iterator = iter(sampler)
    for _ in range(5):  # as if a DataLoader with workers had prefetched 5 batches
        next(iterator)
    state = sampler.state_dict(batches_consumed=2)
    resumed = DurationBatchSampler(durations, MAX_BATCH_SECONDS, seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == sampler.epoch_batches()[2:]
    with pytest.raises(ValueError, match="max_batch_seconds"):
        DurationBatchSampler(durations, 30.0, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="num_replicas"):
        DurationBatchSampler(durations, MAX_BATCH_SECONDS, seed=0, num_replicas=2).load_state_dict(state)


# ---- streams --------------------------------------------------------------------------------


def test_stream_batches_follow_the_rule_within_each_buffer():
    stream = DurationBucketingStream(tiny_dataset(num_shards=4), MAX_BATCH_SECONDS, buffer_size=50, seed=0)
    batches = list(stream)
    ids = [i for batch in batch_ids(batches) for i in batch]
    assert sorted(ids) == [f"utt{i:04d}" for i in range(200)]
    for batch in batches:
        assert len(batch) * max(example["duration"] for example in batch) <= MAX_BATCH_SECONDS
    # The batch order inside a buffer is shuffled, not longest-first.
    first_buffer = [max(e["duration"] for e in batch) for batch in batches[:10]]
    assert first_buffer != sorted(first_buffer, reverse=True)


def test_stream_in_process_sharding_is_disjoint_and_complete():
    shares = []
    for rank in range(2):
        stream = DurationBucketingStream(
            tiny_dataset(num_shards=4), MAX_BATCH_SECONDS, buffer_size=32, num_replicas=2, rank=rank
        )
        shares.append([i for batch in batch_ids(stream) for i in batch])
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == [f"utt{i:04d}" for i in range(200)]


def test_stream_warns_when_shards_do_not_divide_and_rejects_plain_iterables():
    with pytest.warns(UserWarning, match="3 shards"):
        DurationBucketingStream(tiny_dataset(num_shards=3), MAX_BATCH_SECONDS, num_replicas=2, rank=0)
    with pytest.raises(TypeError, match="datasets.IterableDataset"):
        DurationBucketingStream([{"id": "a", "duration": 1.0}], MAX_BATCH_SECONDS, num_replicas=2, rank=0)


def make_stream(source):
    return DurationBucketingStream(source, MAX_BATCH_SECONDS, buffer_size=40, seed=3)


@pytest.mark.parametrize("consumed", [1, 9, 17, 40])
@pytest.mark.parametrize("source_kind", ["datasets", "list"])
def test_stream_resume_continues_with_the_same_batches(consumed, source_kind):
    def source():
        dataset = tiny_dataset(num_shards=4)
        return dataset if source_kind == "datasets" else list(dataset)  # list: no state_dict, fast-forward

    expected = batch_ids(make_stream(source()))
    consumed = min(consumed, len(expected))
    interrupted = make_stream(source())
    iterator = iter(interrupted)
    head = batch_ids(next(iterator) for _ in range(consumed))
    state = interrupted.state_dict()
    if source_kind == "datasets" and state["buffer_index"] > 0:
        assert state["source_state"] is not None

    resumed = make_stream(source())
    resumed.load_state_dict(state)
    assert head + batch_ids(resumed) == expected


def test_stream_infinite_advances_epochs_and_resumes_across_them():
    def make(infinite):
        return DurationBucketingStream(
            tiny_dataset(num_shards=2), MAX_BATCH_SECONDS, buffer_size=64, seed=0, infinite=infinite
        )

    stream = make(infinite=True)
    iterator = iter(stream)
    per_epoch = len(list(make(infinite=False)))
    first = batch_ids(next(iterator) for _ in range(per_epoch + 3))
    assert stream.epoch == 1
    assert first[per_epoch:] != first[:3]  # a new epoch, a new order
    state = stream.state_dict()
    following = batch_ids(next(iterator) for _ in range(5))
    resumed = make(infinite=True)
    resumed.load_state_dict(state)
    resumed_iterator = iter(resumed)
    assert batch_ids(next(resumed_iterator) for _ in range(5)) == following
