"""The pseudo-labeling prefetch thread (issue 11, target 3): same batches in the same order, the position of
what was consumed (not of what was read ahead), errors raised in the consumer, the thread stopped on exit."""

import threading
import time

import pytest

from mlpl.pseudo_label import PseudoLabelConfig
from mlpl.pseudo_label.batches import Prefetched


class CountingBatches:
    """Stands in for _MapStyleBatches: yields batches 0..n-1, `state()` is how many were read."""

    def __init__(self, count, fail_at=None):
        self.count, self.fail_at, self.position = count, fail_at, 0

    def state(self):
        return {"batches": self.position}

    def __iter__(self):
        for index in range(self.count):
            if index == self.fail_at:
                raise RuntimeError(f"cannot decode batch {index}")
            time.sleep(0.001)
            self.position += 1
            yield index


def test_items_come_in_order_with_the_state_of_what_was_consumed():
    batches = CountingBatches(6)
    prefetched = Prefetched(batches, depth=2)
    assert prefetched.state == {"batches": 0}
    seen = []
    for item in prefetched:
        time.sleep(0.005)  # a slow forward: the thread reads ahead meanwhile
        seen.append(item)
        assert prefetched.state == {"batches": item + 1}  # not the thread's position
    assert seen == list(range(6)) and prefetched.state == {"batches": 6}


def test_a_decoding_error_is_raised_in_the_consumer_after_the_good_batches():
    seen = []
    with pytest.raises(RuntimeError, match="cannot decode batch 3"):
        for item in Prefetched(CountingBatches(6, fail_at=3)):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_leaving_the_loop_early_stops_the_thread():
    for item in Prefetched(CountingBatches(1000), depth=2):
        if item == 2:
            break
    time.sleep(0.05)
    assert not [thread for thread in threading.enumerate() if thread.name == "pseudo-label-prefetch"]


def test_a_negative_prefetch_depth_is_refused_naming_the_value():
    with pytest.raises(ValueError, match="prefetch_batches=-1"):
        PseudoLabelConfig(prefetch_batches=-1)


@pytest.mark.parametrize(
    "device, threads, cpus, workers, depth",
    [
        ("cpu", 2, 2, 0, 0),  # the forward's threads take every core: in turn
        ("cpu", 1, 2, 0, 2),  # a core is free: the thread reads ahead
        ("cuda", 2, 2, 0, 2),  # the forward runs on the accelerator: the CPU is free
        ("cpu", 1, 2, 1, 0),  # DataLoader workers decode ahead themselves
    ],
)
def test_the_thread_reads_ahead_only_where_a_core_is_free(monkeypatch, device, threads, cpus, workers, depth):
    from mlpl.pseudo_label import batches as batches_module

    monkeypatch.setattr(batches_module, "default_workers", lambda: cpus)
    monkeypatch.setattr(batches_module.torch, "get_num_threads", lambda: threads)
    prefetched = Prefetched.of(CountingBatches(3), PseudoLabelConfig(num_workers=workers), device)
    assert prefetched.depth == depth
    assert list(prefetched) == [0, 1, 2]
