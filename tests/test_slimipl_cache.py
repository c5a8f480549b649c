"""slimIPL (training/slimipl.py, docs/design.md §5): the 1:lambda step schedule after M supervised updates, the
pseudo-label cache's rules (filling without updates, one training read per unlabeled step, replacement
with probability p, reshuffle after C reads), exact resume from state_dict, and the EMA teacher."""

import io
import math

import pytest
import torch
from torch import nn

from mlpl.slimipl import (
    FILL,
    LABELED_STEP,
    TRAIN,
    TRAIN_AND_REPLACE,
    UNLABELED_STEP,
    EmaTeacher,
    KeptRows,
    PseudoLabelCache,
    SlimIPLSchedule,
    lower_regularization,
    pseudo_labeling_mode,
    select_rows,
)


# ---------------------------------------------------------------------------------------------------------
# Stand-ins for the trainer's data and model: batches that say which unlabeled batch they are, and PLs
# that say which "model version" made them, so every rule is visible in the returned values.
# ---------------------------------------------------------------------------------------------------------


class UnlabeledSource:
    """`next_unlabeled_batch`: batch number n holds n in its features; resumable by position."""

    def __init__(self, position=0):
        self.position = position

    def __call__(self):
        index = self.position
        self.position += 1
        return {
            "input_features": torch.full((2, 3, 4), float(index)),
            "attention_mask": torch.ones(2, 3, dtype=torch.long),
            "ids": [f"utt{index}a", f"utt{index}b"],
        }


class PseudoLabeler:
    """`pseudo_label_fn`: labels = [batch number, model version]; counts its calls."""

    def __init__(self):
        self.model_version = 0
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return torch.tensor([[batch_number(batch), self.model_version]], dtype=torch.long)


def batch_number(batch):
    return int(batch["input_features"][0, 0, 0])


def run_cache(cache, steps, source, labeler):
    """Drive `steps` unlabeled steps; the 'model' changes on every update. Returns a trace of what
    happened: (action, slot, batch number, labels as a tuple)."""
    trace = []
    for _ in range(steps):
        step = cache.step(source, labeler)
        trace.append((step.action, step.slot, batch_number(step.batch), tuple(step.labels.flatten().tolist())))
        if step.trains:
            labeler.model_version += 1
    return trace


def fill(cache, source=None, labeler=None):
    source, labeler = source or UnlabeledSource(), labeler or PseudoLabeler()
    return run_cache(cache, cache.capacity, source, labeler), source, labeler


def torch_save_load(state):
    """Through bytes, as a checkpoint goes; weights_only proves no pickled objects are needed."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---------------------------------------------------------------------------------------------------------
# The schedule: supervised only before M, then cycles of 1 labeled + lambda unlabeled in random order.
# ---------------------------------------------------------------------------------------------------------


def schedule_steps(schedule, count, num_updates):
    return [schedule.next_step(num_updates) for _ in range(count)]


def test_schedule_is_supervised_only_before_warmup_and_consumes_no_cycle():
    schedule = SlimIPLSchedule(supervised_warmup_updates=50, unlabeled_ratio=10, seed=3)
    assert [schedule.next_step(update) for update in range(50)] == [LABELED_STEP] * 50
    assert not schedule.is_active(49) and schedule.is_active(50)
    # The cycles after M are exactly those of a schedule that never saw the warm-up.
    fresh = SlimIPLSchedule(supervised_warmup_updates=50, unlabeled_ratio=10, seed=3)
    assert schedule_steps(schedule, 110, 50) == schedule_steps(fresh, 110, 50)
    expected_counters = {"supervised_warmup_steps": 50, "labeled_steps": 10, "unlabeled_steps": 100, "cycles": 10}
    assert schedule.counters() == expected_counters


@pytest.mark.parametrize("unlabeled_ratio", [1, 3, 10])
def test_each_cycle_has_one_labeled_and_lambda_unlabeled_steps_in_random_order(unlabeled_ratio):
    schedule = SlimIPLSchedule(supervised_warmup_updates=0, unlabeled_ratio=unlabeled_ratio, seed=0)
    length, cycles = 1 + unlabeled_ratio, 2000
    steps = schedule_steps(schedule, length * cycles, num_updates=0)
    positions = []
    for start in range(0, len(steps), length):
        cycle = steps[start : start + length]
        assert cycle.count(LABELED_STEP) == 1 and cycle.count(UNLABELED_STEP) == unlabeled_ratio
        positions.append(cycle.index(LABELED_STEP))
    # The labeled step's place is uniform over the cycle: each place within 5 sigma of cycles / length.
    expected = cycles / length
    sigma = math.sqrt(cycles * (1 / length) * (1 - 1 / length))
    for place in range(length):
        assert abs(positions.count(place) - expected) < 5 * sigma, (place, positions.count(place))


def test_schedule_is_reproducible_by_seed():
    def first_steps(seed):
        return schedule_steps(SlimIPLSchedule(supervised_warmup_updates=0, unlabeled_ratio=10, seed=seed), 220, 0)

    assert first_steps(7) == first_steps(7)
    assert first_steps(7) != first_steps(8)


def test_schedule_state_dict_continues_identically_from_every_point_of_a_cycle():
    for steps_before_saving in range(33, 33 + 2 * 11):  # 3 cycles done, then every place in the next two
        schedule = SlimIPLSchedule(supervised_warmup_updates=5, unlabeled_ratio=10, seed=1)
        schedule_steps(schedule, 5, 0)
        schedule_steps(schedule, steps_before_saving, 5)
        resumed = SlimIPLSchedule(supervised_warmup_updates=5, unlabeled_ratio=10, seed=999)
        resumed.load_state_dict(torch_save_load(schedule.state_dict()))
        assert resumed.counters() == schedule.counters()
        assert schedule_steps(resumed, 50, 6) == schedule_steps(schedule, 50, 6), steps_before_saving
    with pytest.raises(ValueError, match="unlabeled_ratio=10"):
        SlimIPLSchedule(supervised_warmup_updates=5, unlabeled_ratio=5).load_state_dict(schedule.state_dict())


def test_cropping_warmup_covers_the_first_k_slimipl_updates():
    schedule = SlimIPLSchedule(supervised_warmup_updates=100, cropping_warmup_updates=10)
    assert [update for update in range(200) if schedule.crops_unlabeled(update)] == list(range(100, 110))
    assert not any(SlimIPLSchedule(100, cropping_warmup_updates=0).crops_unlabeled(u) for u in range(200))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"supervised_warmup_updates": -1}, "supervised_warmup_updates=-1"),
        ({"unlabeled_ratio": 0}, "unlabeled_ratio=0"),
        ({"unlabeled_ratio": 2.5}, "unlabeled_ratio=2.5"),
    ],
)
def test_schedule_rejects_bad_values_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        SlimIPLSchedule(**arguments)


# ---------------------------------------------------------------------------------------------------------
# The cache.
# ---------------------------------------------------------------------------------------------------------


def test_filling_steps_make_no_update_then_every_step_is_one_training_read():
    capacity, extra_steps = 6, 40
    cache = PseudoLabelCache(capacity=capacity, replace_probability=0.25, seed=0)
    source, labeler = UnlabeledSource(), PseudoLabeler()
    trace = run_cache(cache, capacity + extra_steps, source, labeler)

    # Filling: batches 0..C-1 in slots 0..C-1, PL'd by the untouched model (version 0), no update.
    assert trace[:capacity] == [(FILL, slot, slot, (slot, 0)) for slot in range(capacity)]
    assert cache.is_full and len(cache) == capacity
    # Then each unlabeled step is exactly one read of a stored batch with its stored PLs.
    assert all(action in (TRAIN, TRAIN_AND_REPLACE) for action, *_ in trace[capacity:])
    assert all(labels[0] == number for _, _, number, labels in trace)
    counters = cache.counters()
    assert counters["filling_steps"] == capacity
    assert counters["training_reads"] == extra_steps == labeler.model_version  # updates made by the "trainer"
    assert counters["replacements"] == sum(action == TRAIN_AND_REPLACE for action, *_ in trace)
    # New unlabeled batches are drawn, and pseudo-labeled, only to fill or to replace.
    assert source.position == labeler.calls == capacity + counters["replacements"]


def test_replaced_slot_holds_the_fresh_batch_with_the_current_models_labels():
    cache = PseudoLabelCache(capacity=4, replace_probability=1.0, seed=0)
    _, source, labeler = fill(cache)
    labeler.model_version = 7
    step = cache.step(source, labeler)
    assert step.action == TRAIN_AND_REPLACE
    assert step.labels.tolist() == [[batch_number(step.batch), 0]]  # trains on the OLD batch and PLs
    replaced_batch, replaced_labels = cache.state_dict()["batches"][step.slot], cache.state_dict()["labels"][step.slot]
    assert batch_number(replaced_batch) == 4 and replaced_labels.tolist() == [[4, 7]]


def test_a_labeler_that_keeps_some_rows_has_only_those_stored_and_trained_on():
    """Confidence filtering's contract: `KeptRows` from the labeler -> the cache stores that subset."""

    def keep_second_row(batch):
        return KeptRows(select_rows(batch, [1]), torch.tensor([[batch_number(batch), 1]]))

    cache = PseudoLabelCache(capacity=2, replace_probability=0.0, seed=0)
    source = UnlabeledSource()
    steps = [cache.step(source, keep_second_row) for _ in range(4)]
    assert [step.action for step in steps] == [FILL, FILL, TRAIN, TRAIN]
    for step in steps:
        assert step.batch["ids"] == [f"utt{batch_number(step.batch)}b"]
        assert step.batch["input_features"].shape == (1, 3, 4) and step.batch["attention_mask"].shape == (1, 3)
        assert step.labels.tolist() == [[batch_number(step.batch), 1]]


def test_select_rows_takes_the_rows_of_every_per_utterance_entry():
    batch = {"input_features": torch.arange(24.0).view(3, 2, 4), "language_ids": torch.tensor([5, 6, 7]),
             "ids": ["a", "b", "c"], "sentences": ("x", "y", "z"), "scalar": torch.tensor(2.0), "name": "set"}  # fmt: skip
    rows = select_rows(batch, [2, 0])
    torch.testing.assert_close(rows["input_features"], batch["input_features"][[2, 0]])
    assert rows["language_ids"].tolist() == [7, 5] and rows["ids"] == ["c", "a"] and rows["sentences"] == ("z", "x")
    assert rows["scalar"] is batch["scalar"] and rows["name"] == "set"


@pytest.mark.parametrize("probability", [0.0, 0.1, 0.5, 1.0])
def test_replacement_rate_is_p_within_a_binomial_bound(probability):
    reads = 20_000
    cache = PseudoLabelCache(capacity=10, replace_probability=probability, seed=123)
    _, source, labeler = fill(cache)
    run_cache(cache, reads, source, labeler)
    replacements = cache.counters()["replacements"]
    # Binomial(reads, p): 5 standard deviations, ~1e-6 false-alarm chance (and exact at p = 0 or 1).
    assert abs(replacements - reads * probability) <= 5 * math.sqrt(reads * probability * (1 - probability))


def test_cache_is_exactly_reproducible_by_seed():
    def trace(seed):
        cache = PseudoLabelCache(capacity=8, replace_probability=0.3, seed=seed)
        return run_cache(cache, 200, UnlabeledSource(), PseudoLabeler())

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)


def test_every_slot_is_read_once_per_pass_and_the_order_is_redrawn_after_c_reads():
    capacity, passes = 16, 6
    cache = PseudoLabelCache(capacity=capacity, replace_probability=0.1, seed=0)
    _, source, labeler = fill(cache)
    orders = []
    for finished_passes in range(passes):
        assert cache.counters()["reshuffles"] == finished_passes
        orders.append([slot for _, slot, _, _ in run_cache(cache, capacity, source, labeler)])
        assert sorted(orders[-1]) == list(range(capacity))  # each slot exactly once
    assert cache.counters()["reshuffles"] == passes
    assert len({tuple(order) for order in orders}) == passes  # a new order every pass (16! orders)
    assert orders[0] != list(range(capacity))  # the first order is random too, not the filling order


def test_state_dict_round_trip_mid_run_gives_the_identical_future():
    cache = PseudoLabelCache(capacity=8, replace_probability=0.3, seed=11)
    source, labeler = UnlabeledSource(), PseudoLabeler()
    run_cache(cache, 8 + 21, source, labeler)  # full, 2 passes and 5 reads into the third
    assert 0 < cache.counters()["replacements"] and cache.counters()["reshuffles"] == 2

    state = torch_save_load(cache.state_dict())
    resumed = PseudoLabelCache(capacity=8, replace_probability=0.3, seed=0)
    resumed.load_state_dict(state)
    assert resumed.counters() == cache.counters() and len(resumed) == 8
    # The data source and the model are the trainer's to resume: continue them at the same point.
    resumed_source, resumed_labeler = UnlabeledSource(source.position), PseudoLabeler()
    resumed_labeler.model_version = labeler.model_version
    assert run_cache(resumed, 100, resumed_source, resumed_labeler) == run_cache(cache, 100, source, labeler)
    assert resumed.counters() == cache.counters()


def test_state_dict_round_trip_while_filling():
    cache = PseudoLabelCache(capacity=8, replace_probability=0.3, seed=2)
    source, labeler = UnlabeledSource(), PseudoLabeler()
    run_cache(cache, 3, source, labeler)
    resumed = PseudoLabelCache(capacity=8, replace_probability=0.3)
    resumed.load_state_dict(torch_save_load(cache.state_dict()))
    assert run_cache(resumed, 30, UnlabeledSource(3), PseudoLabeler()) == run_cache(cache, 30, source, PseudoLabeler())


def test_state_dict_is_a_snapshot_of_the_contents():
    cache = PseudoLabelCache(capacity=4, replace_probability=1.0, seed=0)
    _, source, labeler = fill(cache)
    state = cache.state_dict()
    run_cache(cache, 4, source, labeler)  # replaces every slot
    assert [batch_number(batch) for batch in state["batches"]] == [0, 1, 2, 3]


def test_load_state_dict_rejects_another_capacity():
    cache = PseudoLabelCache(capacity=4)
    with pytest.raises(ValueError, match="capacity=4, this one 5"):
        PseudoLabelCache(capacity=5).load_state_dict(cache.state_dict())


def test_cache_keeps_its_own_cpu_copies_and_reports_their_size():
    cache = PseudoLabelCache(capacity=2, seed=0)
    original = UnlabeledSource()()
    step = cache.step(lambda: original, PseudoLabeler())
    original["input_features"].fill_(99.0)  # the caller reuses its buffer
    assert batch_number(step.batch) == 0 and step.batch["ids"] == ["utt0a", "utt0b"]
    assert step.batch["input_features"].device.type == "cpu"
    per_batch = 2 * 3 * 4 * 4 + 2 * 3 * 8 + 2 * 8  # float32 features + int64 mask + int64 labels
    assert cache.memory_bytes() == per_batch
    with pytest.raises(ValueError, match="returned None"):
        cache.step(UnlabeledSource(), lambda batch: None)


@pytest.mark.parametrize(
    "arguments, message",
    [({"capacity": 0}, "capacity=0"), ({"replace_probability": 1.5}, "replace_probability=1.5")],
)
def test_cache_rejects_bad_values_by_name(arguments, message):
    with pytest.raises(ValueError, match=message):
        PseudoLabelCache(**arguments)


def test_trainer_loop_counts_updates_with_schedule_and_cache():
    """The loop of the module docstring: M supervised updates, then cycles whose unlabeled steps first
    fill the cache (labeled updates only), then train on cached PL batches."""
    warmup, ratio, capacity, steps_after_warmup = 5, 3, 6, 4 * 20
    schedule = SlimIPLSchedule(supervised_warmup_updates=warmup, unlabeled_ratio=ratio, seed=0)
    cache = PseudoLabelCache(capacity=capacity, replace_probability=0.5, seed=0)
    source, labeler = UnlabeledSource(), PseudoLabeler()
    num_updates, labeled_updates, pl_updates, steps = 0, 0, 0, 0
    while steps < warmup + steps_after_warmup:
        steps += 1
        if schedule.next_step(num_updates) == LABELED_STEP:
            labeled_updates += 1
        else:
            step = cache.step(source, labeler)
            if not step.trains:
                assert pl_updates == 0  # no PL training while filling
                continue
            pl_updates += 1
        num_updates += 1
    # 20 cycles of 4 steps: 20 labeled, 60 unlabeled of which C = 6 fill and 54 train.
    assert labeled_updates == warmup + 20 and pl_updates == 60 - capacity
    assert num_updates == labeled_updates + cache.counters()["training_reads"]
    assert cache.counters()["filling_steps"] == capacity


# ---------------------------------------------------------------------------------------------------------
# EMA teacher, eval mode for pseudo-labeling, lowered regularization.
# ---------------------------------------------------------------------------------------------------------


def tiny_student(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.BatchNorm1d(3))


def test_ema_update_is_the_exponential_moving_average():
    decay = 0.9
    student = tiny_student()
    teacher = EmaTeacher(student, decay=decay)
    start = {name: value.clone() for name, value in student.state_dict().items()}
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[2].running_mean.fill_(2.0)
        student[2].num_batches_tracked.fill_(7)
    teacher.update(student)
    teacher.update(student)  # twice toward the same student: (1 - decay^2) of the way
    ema = teacher.model.state_dict()
    torch.testing.assert_close(ema["0.weight"], start["0.weight"] + (1 - decay**2) * 1.0)
    torch.testing.assert_close(ema["0.bias"], start["0.bias"])
    torch.testing.assert_close(ema["2.running_mean"], torch.full((3,), (1 - decay**2) * 2.0))
    assert int(ema["2.num_batches_tracked"]) == 7  # integer buffers are copied, not averaged
    assert teacher.num_updates == 2
    assert not any(parameter.requires_grad for parameter in teacher.model.parameters())
    assert all(parameter.requires_grad for parameter in student.parameters())


def test_ema_state_dict_round_trip_and_bad_decay():
    student = tiny_student()
    teacher = EmaTeacher(student, decay=0.999)
    with torch.no_grad():
        student[0].weight.mul_(3.0)
    teacher.update(student)
    resumed = EmaTeacher(tiny_student(seed=1), decay=0.5)
    resumed.load_state_dict(torch_save_load(teacher.state_dict()))
    assert resumed.decay == 0.999 and resumed.num_updates == 1
    torch.testing.assert_close(resumed.model.state_dict(), teacher.model.state_dict())
    with pytest.raises(ValueError, match="decay=1.0"):
        EmaTeacher(student, decay=1.0)


def test_pseudo_labeling_is_deterministic_eval_without_grad_and_restores_the_mode():
    student = tiny_student().train()
    inputs = torch.randn(5, 4)
    with pseudo_labeling_mode(student) as model:
        assert not model.training and not torch.is_grad_enabled()
        first, second = model(inputs), model(inputs)
    torch.testing.assert_close(first, second)  # dropout off
    assert student.training and not first.requires_grad
    teacher = EmaTeacher(student)
    with teacher.pseudo_labeling() as model:
        assert model is teacher.model and not model.training
        torch.testing.assert_close(model(inputs), first)  # no update yet: the teacher equals the student


class TinyRegularizedModel(nn.Module):
    """The one method of the mlpl model that `lower_regularization` relies on."""

    def __init__(self):
        super().__init__()
        self.dropout, self.layerdrop = 0.3, 0.2

    def set_regularization(self, dropout=None, layerdrop=None):
        self.dropout, self.layerdrop = dropout, layerdrop


def test_lower_regularization_sets_the_slimipl_values():
    model = TinyRegularizedModel()
    lower_regularization(model)
    assert (model.dropout, model.layerdrop) == (0.1, 0.1)  # docs/design.md §5 defaults
    lower_regularization(model, dropout=0.05, layerdrop=0.0)
    assert (model.dropout, model.layerdrop) == (0.05, 0.0)
    with pytest.raises(TypeError, match="set_regularization"):
        lower_regularization(nn.Linear(2, 2))
