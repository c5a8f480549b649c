"""The trainer: supervised multilingual CTC + LID training and slimIPL, the accelerate way (docs/design.md §4-5).

`train(config)` reads top to bottom like accelerate's complete example, in three parts:

    _set_up: Accelerator -> data -> processor + model -> batch sources -> optimizer + schedule -> prepare
    the loop (`_train`): resume -> for each step: its kind (labeled / unlabeled, slimIPL) and batch
      -> SpecAugment -> forward -> non-finite vote -> backward -> clip -> update
      -> log / evaluate (gathered across processes) / checkpoint
    the end: final model folder, summary

`_TrainingRun` holds what the loop carries between updates (the prepared model and optimizer, the batch
sources, the slimIPL schedule, cache and teacher, the counters) and does each stage of an update as one
method; the checkpoint's content, save and safe load are mlpl.checkpoint's, the loading of the data
mlpl.trainer_data's.

Launch with `accelerate launch scripts/train.py --config CONFIG.yaml [key=value ...]`, one process or many.

Where the time goes: the forward/backward of the encoder; decoding and feature extraction run on the
CPU in the main loop (num_workers > 0 moves the latter to DataLoader workers). Synchronisation points
between processes: the non-finite-loss vote (one all-reduce of a flag per step), gradient all-reduce,
evaluation gathers, checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm.auto import tqdm

from modeling_mlpl import AUTO_LANGUAGE, MlplConfig, MlplForCTC, MlplProcessor

from .adapters import load_initial_model, parameter_counts, run_identity
from .augment import SpecAugment
from .cli import process_state, progress_bars_off
from .checkpoint import CHECKPOINTS, RunCounters, TrainerState, checkpoint_steps, load_checkpoint, newest_checkpoint, save_checkpoint
from .batching import DurationBatchSampler, DurationBucketingStream
from .collate import MlplCollator
from .audio_cache import process_audio_cache
from .config import MODEL_SIZES, ExperimentConfig, check_decay_from, config_to_dict, save_config
from .files import replace_directory, write_json_atomically, write_text_atomically
from .data import example_durations, records_of
from .loaders import transcripts_by_id
from .inference import FRAMES_PER_SECOND, greedy_batch, pad_labels, sequence_confidence, transcribe_batch
from .metrics import compute_asr_metrics, flatten_metrics
from .precision import resolve_mixed_precision
from .run_folder import claim_run_folder
from .streaming import stream_batches, training_stream
from .trainer_data import TrainingData, language_hours_report, load_training_data, training_language_characters, training_sampler
from .slimipl import (
    LABELED_STEP,
    EmaTeacher,
    KeptRows,
    PseudoLabelCache,
    SlimIPLSchedule,
    lower_regularization,
    pseudo_labeling_mode,
    select_rows,
)

logger = logging.getLogger("mlpl.trainer")

MODEL_INPUTS = ("input_features", "attention_mask", "labels", "language_ids")
BEST_MODEL = "best"
FINAL_MODEL = "final"
FINISHED_MARKER = "train_summary.json"  # written last: a run that has it is complete


# ---------------------------------------------------------------------------------------------------------
# Pieces the loop calls. Each one is used by the trainer, the recipe and the tests alike.
# ---------------------------------------------------------------------------------------------------------


def new_model_config(config: ExperimentConfig, vocab_size: int, languages: list[str]) -> MlplConfig:
    """MlplConfig for a model trained from scratch: the size preset, the overrides, the data's symbols and languages."""
    values = {**MODEL_SIZES[config.model.size], **config.model.overrides, "vocab_size": vocab_size, "languages": languages}
    return MlplConfig(**values)


def save_model_folder(model, processor, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """`save_pretrained` of model + processor (+ JSON files in `extra`), atomically: written under a
    temporary name and renamed over the previous folder, so a crash never leaves a half-written model."""
    folder = Path(folder)
    temporary = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(temporary)
    processor.save_pretrained(temporary)
    for name, content in (extra or {}).items():
        write_json_atomically(temporary / name, content)
    return replace_directory(temporary, folder)


def linear_warmup_with_halving(warmup_updates: int, halve_at: int | None, decay_from: int | None = None, max_updates: int | None = None):
    """lr factor for update `n` (0-based): linear warm-up to 1 over `warmup_updates`, then 1, halved
    once from update `halve_at` on (docs/design.md §4: 64k warm-up, halved at 250k). With `decay_from`, the
    factor then falls linearly from its value there to 0 at update `max_updates` (an annealed end, for runs
    of a fixed, short budget; docs/design.md §4)."""
    check_decay_from(decay_from, max_updates)

    def factor(update: int) -> float:
        value = min(1.0, (update + 1) / warmup_updates) if warmup_updates > 0 else 1.0
        value *= 0.5 if halve_at is not None and update >= halve_at else 1.0
        if decay_from is not None and update >= decay_from:
            value *= max(0.0, (max_updates - update) / (max_updates - decay_from))
        return value

    return factor


def build_optimizer(parameters, optim) -> torch.optim.Optimizer:
    if optim.optimizer == "adagrad":
        # docs/design.md §4: Adagrad, eps 1e-8; Flashlight's accumulator starts at 0.
        return torch.optim.Adagrad(parameters, lr=optim.lr, eps=optim.eps, weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=optim.lr, eps=optim.eps, betas=optim.betas, weight_decay=optim.weight_decay)
    raise ValueError(f"optim.optimizer={optim.optimizer!r}; use 'adagrad' (the paper's) or 'adamw'")


def _data_loader(dataset, sampler, collator, num_workers: int = 0) -> torch.utils.data.DataLoader:
    # Its own generator: starting a DataLoader iterator draws a seed, which must not come from the global
    # RNG (dropout's), or a resumed run would draw different dropout masks than an uninterrupted one.
    generator = torch.Generator().manual_seed(sampler.seed)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers, generator=generator
    )


def epoch_batches(dataset, sampler: DurationBatchSampler, collator, num_workers: int, position: dict) -> Iterator[dict]:
    """Collated batches forever, epoch after epoch; `position` tracks (epoch, batches consumed) for checkpoints.

    The sampler continues where a loaded state left it; an epoch ends, the next one is reshuffled.
    """
    while True:
        loader = _data_loader(dataset, sampler, collator, num_workers)
        whole_epoch, usable = position["consumed"] == 0, 0  # a resumed epoch may have nothing left
        for batch in loader:
            position["consumed"] += 1
            if batch is None:
                continue  # every clip of the batch failed to decode (already counted and logged)
            usable += 1
            yield batch
        if whole_epoch and not usable:  # looping on would spin forever at 100 % CPU
            raise ValueError(
                f"a whole epoch over {len(sampler)} batch(es) gave no usable batch: every clip failed to decode "
                "(the warnings above name them); fix or remove those files"
            )
        sampler.set_epoch(sampler.epoch + 1)
        position["consumed"] = 0


def training_batches(dataset, sampler, collator, num_workers: int, position: dict) -> Iterator[dict]:
    """Collated batches forever from a map-style sampler (`epoch_batches`) or a stream (`stream_batches`)."""
    if isinstance(sampler, DurationBucketingStream):
        return stream_batches(sampler, collator)
    return epoch_batches(dataset, sampler, collator, num_workers, position)


class BatchSource:
    """A batch source of the loop: collated batches forever (`training_batches`), and what a checkpoint keeps
    of it (a map-style sampler's epoch and consumed batches, or a stream's own state)."""

    def __init__(self, dataset, sampler, collator, num_workers: int):
        self.sampler = sampler
        self.position = {"consumed": 0}  # batches of the epoch the loop has used (epoch_batches counts them)
        self.batches = training_batches(dataset, sampler, collator, num_workers, self.position)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        return next(self.batches)

    def state_dict(self) -> dict:
        if isinstance(self.sampler, DurationBucketingStream):
            return self.sampler.state_dict()
        return self.sampler.state_dict(self.position["consumed"])

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self.position["consumed"] = state.get("position", 0)  # (a stream keeps its position in its own state)


def evaluate(accelerator, model, processor, dev_sets: dict, collator, max_batch_seconds: float) -> dict:
    """Greedy CER per language and LID accuracy on each dev set, gathered across processes.

    Returns `{"<dev name>": compute_asr_metrics(...)}`, the same dict on every process.
    """
    unwrapped = accelerator.unwrap_model(model)
    codes = unwrapped.config.language_codes
    results = {}
    for name, dataset in dev_sets.items():
        sampler = DurationBatchSampler.from_dataset(
            dataset, max_batch_seconds, seed=0, num_replicas=accelerator.num_processes, rank=accelerator.process_index
        )
        rows = []
        loader = _data_loader(dataset, sampler, collator)
        with pseudo_labeling_mode(unwrapped):  # eval mode, no grad
            for batch in tqdm(loader, desc=f"eval {name}", leave=False, disable=progress_bars_off() or not accelerator.is_local_main_process):
                if batch is None:
                    continue
                decoded = transcribe_batch(unwrapped, batch, processor.tokenizer)  # on the model's device
                for i, example_id in enumerate(batch["ids"]):
                    rows.append(
                        {
                            "id": example_id,
                            "reference": batch["sentences"][i],
                            "prediction": decoded["texts"][i],
                            "language": codes[int(batch["language_ids"][i])],
                            "predicted_language": codes[int(decoded["language_ids"][i])] if decoded["language_ids"] is not None else None,
                        }
                    )
        rows = accelerator.gather_for_metrics(rows, use_gather_object=True)
        unique = {row["id"]: row for row in rows}  # a tiny set may repeat a batch to even out processes
        rows = list(unique.values())
        results[name] = compute_asr_metrics(
            [r["prediction"] for r in rows],
            [r["reference"] for r in rows],
            [r["language"] for r in rows],
            predicted_languages=[r["predicted_language"] for r in rows] if unwrapped.lid_head is not None else None,
        )
        results[name]["num_utterances"] = len(rows)
    return results


def average_dev_cer(results: dict) -> float:
    values = [r["cer"] for r in results.values() if r.get("cer") is not None]
    return sum(values) / len(values) if values else math.inf


@dataclass
class TrainResult:
    num_updates: int
    best_dev_cer: float
    best_model: Path | None
    final_model: Path
    output_dir: Path
    model: Any = None  # the trained model (unwrapped), as this process holds it


# What may change between invocations of one run: the run folder's identity (mlpl.run_folder) ignores it.
RUN_IGNORED_KEYS = (
    "train.output_dir", "train.max_updates", "train.log_with", "train.keep_last", "data.num_workers", "data.duration_cache_dir",
    "data.scan_workers", "data.audio_cache_gb",
)  # fmt: skip


def _is_main_process() -> bool:
    """Rank 0 of a launch, read from the environment that `accelerate launch` / torchrun set (before any
    Accelerator exists: creating the process state here would fix its device before `train.cpu` is read)."""
    return int(os.environ.get("RANK", "0")) == 0


def _logged_update(line: str) -> int | None:
    """The update of a metrics.jsonl row; None for a blank or partial line (a run killed mid-write)."""
    try:
        return int(json.loads(line).get("update", 0))
    except (ValueError, AttributeError, TypeError):
        return None


def truncate_metrics(path: Path, update: int) -> int:
    """Drop the rows of `metrics.jsonl` logged after `update` (a resumed run logs those updates again, so
    the file keeps one row per update), and any partial row of a killed run; returns how many were dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _logged_update(line) is not None and _logged_update(line) <= update]
    if len(kept) != len(lines):
        write_text_atomically(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


# ---------------------------------------------------------------------------------------------------------
# The training function.
# ---------------------------------------------------------------------------------------------------------


def train(config: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train as `config` says into `train.output_dir`; `resume` continues from its newest checkpoint.

    The main process first claims the folder (mlpl.run_folder): a lock against a second concurrent run,
    and a refusal of a folder that holds another run (naming the keys that differ) unless `overwrite`,
    which deletes that run first.
    """
    if not _is_main_process():
        return _train(config, resume)
    with claim_run_folder(
        config.train.output_dir, run_identity(config_to_dict(config)), ignore=RUN_IGNORED_KEYS, overwrite=overwrite, resume=resume,
        has_progress=lambda folder: bool(checkpoint_steps(folder)), what="training (mlpl.trainer.train)",
    ):  # fmt: skip
        return _train(config, resume)


def _train(config: ExperimentConfig, resume: bool) -> TrainResult:
    run = _set_up(config)
    resumed = run.resume() if resume else False
    run.start_logging(resumed)
    if config.train.eval_before_training and run.counters.num_updates == 0:
        run.evaluate_and_keep_best()  # the starting point of the dev curve (and of the stage table)
    run.model.train()
    while run.counters.num_updates < config.train.max_updates:
        # 1. What kind of step (docs/design.md §5): labeled, or unlabeled from the pseudo-label cache.
        kind, batch = run.next_batch()
        if batch is None:
            continue  # a filling step of the cache: pseudo-labels made, no update
        # 2-3. SpecAugment, forward, the all-process non-finite vote, backward, clip, optimizer step.
        outputs, grad_norm = run.train_step(batch, kind)
        if outputs is None:
            continue  # a non-finite loss on some process: the batch is skipped on all of them
        run.count_step(kind, batch, outputs)
        if not run.accelerator.sync_gradients:
            continue  # gradient accumulation: more micro-batches before the update
        run.finish_update()

        # 4. Log, evaluate, checkpoint.
        if run.due(config.train.log_every):
            run.log_training(grad_norm)
        if run.due(config.train.eval_every):
            run.evaluate_and_keep_best()
            run.model.train()
        if run.due(config.train.save_every):
            run.save_checkpoint()
    return run.finish()


# ---------------------------------------------------------------------------------------------------------
# Setting up a run: accelerator -> data -> processor + model -> batches -> optimizer + schedule -> prepare.
# ---------------------------------------------------------------------------------------------------------


def _release_accelerator_state(mixed_precision: str, cpu: bool) -> None:
    """Let a second run in the same process (a notebook, `train()` called twice) use another precision or device.

    accelerate keeps one `AcceleratorState` per process and refuses an `Accelerator` whose mixed precision (or
    `cpu=True`) differs from the first one's ("restart your runtime"). A run's state is its own, so the previous
    run's is dropped; the process group (`PartialState`) is kept, so this is safe under `accelerate launch` too.
    """
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state  # empty until the process's first Accelerator
    previous, device = state.get("_mixed_precision"), state.get("device")
    if previous is None:
        return
    if previous != mixed_precision or (cpu and device is not None and device.type != "cpu"):
        logger.info("the previous Accelerator in this process used %s on %s: a fresh state for %s", previous, device, mixed_precision)
        AcceleratorState._reset_state(reset_partial_state=False)


def _accelerator(config: ExperimentConfig) -> Accelerator:
    """The Accelerator of the run, the seed set, and the run folder with the run's config.yaml."""
    output_dir = Path(config.train.output_dir)
    # Layerdrop skips whole branches, so some parameters get no gradient in a step: DDP must be told.
    layerdrop_possible = (config.model.layerdrop or 0) > 0 or config.slimipl.enabled or config.model.layerdrop is None
    device = torch.device("cpu") if config.train.cpu else process_state().device
    mixed_precision = resolve_mixed_precision(config.train.mixed_precision, device)
    _release_accelerator_state(mixed_precision, config.train.cpu)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=config.train.log_with or None,
        project_dir=str(output_dir),
        cpu=config.train.cpu,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=layerdrop_possible)],
    )
    set_seed(config.train.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
    logger.info("training into %s with %d process(es) on %s", output_dir, accelerator.num_processes, accelerator.device)
    return accelerator


def _processor_and_model(config: ExperimentConfig, data: TrainingData) -> tuple[MlplProcessor, MlplForCTC]:
    """The initial model (`model.init_from`, + a LoRA adapter with adapters.enabled) or a new one sized by the
    config for the data's symbols and languages, with the run's regularization and loss settings."""
    if config.model.init_from:
        processor = MlplProcessor.from_pretrained(config.model.init_from)
        model = load_initial_model(config.model.init_from, config.adapters)
        missing = sorted(set(data.languages) - set(model.config.language_codes))
        if model.lid_head is not None and missing:
            raise ValueError(
                f"the data has languages {missing} that {config.model.init_from} has no LID class for "
                f"(it knows {model.config.language_codes}); filter the sources with `languages:`"
            )
        logger.info("initialised from %s", config.model.init_from)
    else:
        if config.adapters.enabled:
            raise ValueError("adapters.enabled needs model.init_from: the model folder (or adapter folder) to adapt")
        sentences = [sentence for _, sentence in data.transcripts] if data.streaming else records_of(data.train_set)["sentence"]
        processor = MlplProcessor.from_transcripts(sentences)
        model = MlplForCTC(new_model_config(config, len(processor.tokenizer), data.languages))
        logger.info(
            "new %s model: %d parameters, %d symbols, languages %s",
            config.model.size, model.num_parameters(), len(processor.tokenizer), data.languages,
        )
    model.config.language_characters = training_language_characters(config.data.train, model.config.language_characters)
    model.set_regularization(dropout=config.model.dropout, layerdrop=config.model.layerdrop)
    if config.model.lid_loss_weight is not None:
        model.config.lid_loss_weight = config.model.lid_loss_weight
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return processor, model


def _batch_sources(config: ExperimentConfig, data: TrainingData, collator, world: int, rank: int) -> tuple[BatchSource, BatchSource | None]:
    """This process's labeled batches and, with slimIPL, its unlabeled ones (seed + 1)."""
    if (data.streaming or data.unlabeled_streaming) and config.data.num_workers:
        logger.warning(
            "data.num_workers=%d is not used for streamed data: streams decode in the training process "
            "(training/streaming.py, stream_batches); map-style sources use the workers", config.data.num_workers,
        )  # fmt: skip
    if data.streaming:
        train_sampler = training_stream(data.train_stream, config.data, config.train.seed, world, rank)
    else:
        train_sampler = training_sampler(data.train_set, config.data, config.train.seed, world, rank)
    unlabeled_sampler = None
    if data.unlabeled_streaming:
        unlabeled_sampler = training_stream(data.unlabeled_stream, config.data, config.train.seed + 1, world, rank)
    elif config.slimipl.enabled:
        unlabeled_sampler = DurationBatchSampler.from_dataset(
            data.unlabeled_set, config.data.max_batch_seconds, seed=config.train.seed + 1, num_replicas=world, rank=rank,
            max_batch_size=config.data.max_batch_size,
        )  # fmt: skip
    if data.streaming:
        logger.info("train: streamed, %d transcripts, buffers of %d examples", len(data.transcripts), config.data.stream_buffer_size)
    else:
        logger.info(
            "train: %d utterances, %.2f h, %d batches per process per epoch",
            len(data.train_set), example_durations(data.train_set).sum() / 3600, len(train_sampler),
        )
    temperature = config.data.language_temperature
    if temperature != 1:
        mix = data.stream_mix
        target, natural = (mix["target_share"], mix["natural_share"]) if data.streaming else (train_sampler.target_shares, train_sampler.natural_shares)
        logger.info(
            "language temperature %g: target shares of the training %s %s (natural %s)", temperature, "utterances" if data.streaming else "audio",
            {k: round(v, 4) for k, v in target.items()}, {k: round(v, 4) for k, v in natural.items()},
        )  # fmt: skip
    labeled = BatchSource(data.train_set, train_sampler, collator, config.data.num_workers)
    unlabeled = BatchSource(data.unlabeled_set, unlabeled_sampler, collator, config.data.num_workers) if config.slimipl.enabled else None
    return labeled, unlabeled


def _set_up(config: ExperimentConfig) -> _TrainingRun:
    accelerator = _accelerator(config)
    data = load_training_data(config, accelerator)
    processor, model = _processor_and_model(config, data)
    language_to_id = {code: i for i, code in enumerate(model.config.language_codes)}
    collator = MlplCollator(
        processor.feature_extractor, processor.tokenizer, language_to_id, on_unknown_characters=config.data.on_unknown_characters
    )
    rank = accelerator.process_index
    labeled, unlabeled = _batch_sources(config, data, collator, accelerator.num_processes, rank)

    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config.optim)  # (an adapter's base is frozen)
    # Stepped by hand once per update (accelerate's prepared scheduler steps once per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_with_halving(
        config.optim.warmup_updates, config.optim.halve_lr_at, config.optim.decay_from, config.train.max_updates
    ))
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    spec, slimipl = config.spec_augment, config.slimipl
    spec_augment = (
        SpecAugment(spec.num_freq_masks, spec.freq_mask_width, spec.num_time_masks, spec.time_mask_width, spec.time_mask_max_ratio, spec.start_update)
        if spec.enabled
        else None
    )
    if spec_augment is not None and spec.batches == "pseudo_labeled" and not slimipl.enabled and accelerator.is_main_process:
        logger.info("spec_augment.batches: pseudo_labeled without slimIPL: no batch is masked (a labeled-only run trains clean)")
    return _TrainingRun(
        config=config, accelerator=accelerator, data=data, processor=processor, collator=collator,
        model=model, unwrapped=unwrapped, optimizer=optimizer, scheduler=scheduler, labeled=labeled, unlabeled=unlabeled,
        spec_augment=spec_augment, augment_generator=torch.Generator().manual_seed(config.train.seed),
        schedule=SlimIPLSchedule(slimipl.supervised_warmup_updates, slimipl.unlabeled_ratio, slimipl.cropping_warmup_updates, seed=config.train.seed),
        cache=PseudoLabelCache(slimipl.cache_size, slimipl.replace_probability, seed=config.train.seed + rank),
        counters=RunCounters(language_seconds=[0.0] * len(unwrapped.config.language_codes)),
        vocabulary=processor.tokenizer.get_vocab(),
        lm_decoders=_slimipl_lm_decoders(config, processor, data.languages),
        oracle=transcripts_by_id(slimipl.oracle_transcripts) if slimipl.enabled and slimipl.oracle_transcripts else None,
    )  # fmt: skip


def _slimipl_lm_decoders(config: ExperimentConfig, processor: MlplProcessor, languages) -> dict:
    """slimIPL's LM decoders for the run's languages with `slimipl.lm` (mlpl.config.LMDecodingOptions), else {};
    weights default to the `lm_decoding.json` chosen on dev beside the initial model (`model.init_from`)."""
    if not (config.slimipl.enabled and config.slimipl.lm):
        return {}
    from .evaluation import lm_decoders

    return lm_decoders(processor.tokenizer, config.slimipl, languages, model=config.model.init_from)


# ---------------------------------------------------------------------------------------------------------
# A run in progress: what the loop holds between updates, and what it does at each stage of one.
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _LossWindow:
    """The training losses and audio since the last log row."""

    loss: float = 0.0
    ctc_loss: float = 0.0
    lid_loss: float = 0.0
    steps: int = 0
    audio_seconds: float = 0.0
    start: float = field(default_factory=time.time)


@dataclass(eq=False)
class _TrainingRun:
    """One process's run: the pieces `_set_up` built, the counters a checkpoint keeps, and the stages of an update."""

    config: ExperimentConfig
    accelerator: Accelerator
    data: TrainingData
    processor: MlplProcessor
    collator: MlplCollator
    model: Any  # as prepared by accelerate (DDP-wrapped with several processes)
    unwrapped: MlplForCTC
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    labeled: BatchSource
    unlabeled: BatchSource | None
    spec_augment: SpecAugment | None
    augment_generator: torch.Generator
    schedule: SlimIPLSchedule
    cache: PseudoLabelCache
    counters: RunCounters
    vocabulary: dict[str, int]  # the tokenizer's, for script-constrained pseudo-labels
    lm_decoders: dict = field(default_factory=dict)  # slimipl.lm: language (or "*") -> MlplBeamSearchDecoder
    oracle: dict[str, str] | None = None  # slimipl.oracle_transcripts: utterance id -> its true transcript
    teacher: EmaTeacher | None = None
    window: _LossWindow = field(default_factory=_LossWindow)
    progress: Any = None  # the tqdm bar, from start_logging on
    audio_cache_start: dict = field(default_factory=lambda: process_audio_cache().stats())  # hits / decodes before this run

    @property
    def output_dir(self) -> Path:
        return Path(self.config.train.output_dir)

    @property
    def log_path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def due(self, every: int) -> bool:
        """Whether the update just made is one of every `every` (or the last one)."""
        updates = self.counters.num_updates
        return updates % every == 0 or updates == self.config.train.max_updates

    # ---- checkpoints (mlpl.checkpoint) ---------------------------------------------------------------

    def trainer_state(self) -> TrainerState:
        return TrainerState(
            counters=self.counters,
            scheduler=self.scheduler.state_dict(),
            train_sampler=self.labeled.state_dict(),
            augment_generator=self.augment_generator.get_state(),
            schedule=self.schedule.state_dict(),
            cache=self.cache.state_dict(),
            unlabeled_sampler=self.unlabeled.state_dict() if self.unlabeled is not None else None,
            teacher=self.teacher.state_dict() if self.teacher is not None else None,
        )

    def save_checkpoint(self) -> None:
        save_checkpoint(self.accelerator, self.output_dir, self.trainer_state(), self.config)

    def resume(self) -> bool:
        """Continue from the newest checkpoint of the run folder, if there is one."""
        checkpoint = newest_checkpoint(self.output_dir)
        if checkpoint is None:
            logger.info("--resume: no checkpoint in %s, starting from scratch", self.output_dir / CHECKPOINTS)
            return False
        saved = TrainerState.from_dict(load_checkpoint(self.accelerator, checkpoint), self.counters)
        self.counters = saved.counters
        self.scheduler.load_state_dict(saved.scheduler)
        self.labeled.load_state_dict(saved.train_sampler)
        self.augment_generator.set_state(saved.augment_generator)
        self.schedule.load_state_dict(saved.schedule)
        self.cache.load_state_dict(saved.cache)
        if self.unlabeled is not None:
            self.unlabeled.load_state_dict(saved.unlabeled_sampler)
        slimipl = self.config.slimipl
        if self.counters.regularization_lowered:
            lower_regularization(self.unwrapped, slimipl.dropout, slimipl.layerdrop)
        if saved.teacher is not None:
            self.teacher = EmaTeacher(self.unwrapped, slimipl.ema_decay)
            self.teacher.load_state_dict(saved.teacher)
        logger.info("resumed from %s at update %d", checkpoint, self.counters.num_updates)
        return True

    # ---- logging ------------------------------------------------------------------------------------------

    def start_logging(self, resumed: bool) -> None:
        """Trackers, metrics.jsonl (a resumed run drops the rows after its checkpoint), the progress bar."""
        config = self.config
        if config.train.log_with:
            self.accelerator.init_trackers(self.output_dir.name, config=flatten_metrics(config_to_dict(config), "."))
        updates = self.counters.num_updates
        if self.accelerator.is_main_process and resumed:
            dropped = truncate_metrics(self.log_path, updates)
            if dropped:
                logger.info("metrics.jsonl: dropped %d row(s) logged after update %d (they are logged again)", dropped, updates)
        self.progress = tqdm(
            total=config.train.max_updates, initial=updates, desc="train", unit="update", disable=progress_bars_off() or not self.accelerator.is_local_main_process
        )
        self.window = _LossWindow()

    def log(self, record: dict) -> None:
        """One metrics.jsonl row (main process) and the trackers' numbers, at the current update."""
        record = {"update": self.counters.num_updates, **record}
        if self.accelerator.is_main_process:
            with open(self.log_path, "a", encoding="utf-8") as log_file:
                log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self.config.train.log_with:
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=self.counters.num_updates)

    def log_training(self, grad_norm) -> None:
        """The window's average losses, lr, throughput, slimIPL counters and hours per language; a new window."""
        window, accelerator = self.window, self.accelerator
        elapsed = time.time() - window.start
        record = {
            "loss": window.loss / window.steps,
            "ctc_loss": window.ctc_loss / window.steps,
            "lid_loss": window.lid_loss / window.steps,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "audio_seconds_per_second": window.audio_seconds * accelerator.num_processes / max(elapsed, 1e-9),
            "skipped_non_finite": self.counters.skipped_non_finite,
        }
        if self.config.slimipl.enabled:
            record.update({f"slimipl/{k}": v for k, v in {**self.schedule.counters(), **self.cache.counters()}.items()})
            record["slimipl/dropped_pseudo_labels"] = self.counters.dropped_pseudo_labels
        record.update({f"train_hours/{code}": hours for code, hours in self.language_hours().items()})
        self.log(record)
        self.progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}")
        self.window = _LossWindow()

    def language_hours(self) -> dict[str, float]:
        """Hours of labeled audio trained on so far per language, summed over processes (a collective)."""
        accelerator = self.accelerator
        seconds = accelerator.reduce(torch.tensor(self.counters.language_seconds, dtype=torch.float64, device=accelerator.device), reduction="sum")
        return {code: value / 3600 for code, value in zip(self.unwrapped.config.language_codes, seconds.tolist()) if value > 0}

    # ---- evaluation ---------------------------------------------------------------------------------------

    def evaluate_and_keep_best(self) -> None:
        """Dev CER on every process (`evaluate`), logged; a new best is saved as the `best/` model folder."""
        if not self.data.dev_sets:
            return
        config, counters = self.config, self.counters
        results = evaluate(
            self.accelerator, self.model, self.processor, self.data.dev_sets, self.collator,
            config.data.eval_max_batch_seconds or config.data.max_batch_seconds,
        )  # fmt: skip
        dev_cer = average_dev_cer(results)
        record = {"dev_cer": dev_cer}
        for name, result in results.items():
            record.update({f"dev/{name}/{k}": v for k, v in flatten_metrics(result).items()})
        self.log(record)
        main = self.accelerator.is_main_process
        if main:
            logger.info("update %d: dev CER %.4f (best %.4f)", counters.num_updates, dev_cer, counters.best_dev_cer)
        if dev_cer < counters.best_dev_cer:
            counters.best_dev_cer = dev_cer
            if main:
                metrics = {"update": counters.num_updates, "dev_cer": dev_cer, "dev": results}
                save_model_folder(self.unwrapped, self.processor, self.output_dir / BEST_MODEL, {"dev_metrics.json": metrics})
                save_config(config, self.output_dir / BEST_MODEL / "training_config.yaml")
        self.accelerator.wait_for_everyone()

    # ---- one update ---------------------------------------------------------------------------------------

    def next_batch(self) -> tuple[str, dict | None]:
        """The step's kind (docs/design.md §5) and its batch: labeled, or a cached batch with its pseudo-labels;
        None for a step that fills the cache."""
        slimipl = self.config.slimipl
        kind = self.schedule.next_step(self.counters.num_updates) if slimipl.enabled else LABELED_STEP
        if kind == LABELED_STEP:
            return kind, next(self.labeled)
        if not self.counters.regularization_lowered:
            lower_regularization(self.unwrapped, slimipl.dropout, slimipl.layerdrop)  # docs/design.md §5: from slimIPL's start
            self.counters.regularization_lowered = True
            if slimipl.ema_decay is not None and self.teacher is None:
                self.teacher = EmaTeacher(self.unwrapped, slimipl.ema_decay)
        cache_step = self.cache.step(lambda: next(self.unlabeled), self.pseudo_label)
        if not cache_step.trains:
            return kind, None
        return kind, dict(cache_step.batch, labels=cache_step.labels)

    def pseudo_label(self, batch: dict) -> torch.Tensor | KeptRows:
        """slimIPL's pseudo-labels of an unlabeled batch: the model (or its EMA teacher) in eval mode, no
        SpecAugment, greedy, no LM; cropped during the cropping warm-up (docs/design.md §5). With
        `slimipl.min_confidence`, only the utterances at least that confident (and always the most confident
        one) are kept, as `KeptRows`."""
        slimipl, counters = self.config.slimipl, self.counters
        if self.oracle is not None:  # the topline: the true transcripts, not the model's (docs/design.md §5)
            counters.pseudo_labeled_batches += 1
            return self.collator.labels([{"id": key, "sentence": self.oracle_transcript(key)} for key in batch["ids"]])
        crop_frames = int(slimipl.crop_seconds * FRAMES_PER_SECOND) if self.schedule.crops_unlabeled(counters.num_updates) else None
        counters.pseudo_labeled_batches += 1
        counters.cropped_pseudo_labeled_batches += crop_frames is not None
        labeler = self.teacher.model if self.teacher is not None else self.unwrapped
        languages = None
        if slimipl.language_constraint:  # docs/design.md §3.1: the source's language, the LID's guess if unknown
            codes = labeler.config.language_codes
            languages = [codes[index] if index >= 0 else AUTO_LANGUAGE for index in batch["language_ids"].tolist()]
        with pseudo_labeling_mode(labeler):
            token_ids, logits, output_lengths, _ = greedy_batch(labeler, batch, self.vocabulary, crop_frames, language=languages)
        if self.lm_decoders:  # slimipl.lm: the LM beam search's transcripts of the same logits
            token_ids = self.lm_token_ids(batch, token_ids, logits, output_lengths)
        if slimipl.min_confidence is None:
            return pad_labels(token_ids)
        confidences = sequence_confidence(logits, output_lengths)
        best = max(range(len(confidences)), key=confidences.__getitem__)
        rows = [row for row, value in enumerate(confidences) if value >= slimipl.min_confidence or row == best]
        counters.pseudo_labeled_utterances += len(confidences)
        counters.dropped_pseudo_labels += len(confidences) - len(rows)
        return KeptRows(select_rows(batch, rows), pad_labels([token_ids[row] for row in rows]))

    def oracle_transcript(self, key: str) -> str:
        if key not in self.oracle:
            raise KeyError(
                f"unlabeled utterance {key!r} has no row in slimipl.oracle_transcripts ({self.config.slimipl.oracle_transcripts}); "
                f"the oracle topline needs the true transcript of every unlabeled utterance"
            )
        return self.oracle[key]

    def lm_token_ids(self, batch: dict, greedy_ids: list, logits: torch.Tensor, output_lengths: torch.Tensor) -> list:
        """Each utterance's PL from its language's LM decoder, as the tokenizer encodes a transcript (the greedy
        one where no LM covers the language)."""
        from .evaluation import decode_with_lm

        codes = self.unwrapped.config.language_codes
        logits, output_lengths = logits.float().cpu(), output_lengths.cpu()
        token_ids = []
        for row, index in enumerate(batch["language_ids"].tolist()):
            text = decode_with_lm(self.lm_decoders, codes[index] if index >= 0 else "", logits, output_lengths, row)
            token_ids.append(greedy_ids[row] if text is None else self.processor.tokenizer(text).input_ids)
        return token_ids

    def train_step(self, batch: dict, kind: str) -> tuple[Any, torch.Tensor | None]:
        """SpecAugment (one set of masks per batch; every batch, or with `spec_augment.batches:
        pseudo_labeled` only slimIPL's PL batches, docs/design.md §5), forward, the all-process non-finite
        vote, backward, clip, optimizer step (docs/design.md §4).

        Returns the model's outputs and the gradient norm (None without clipping or between accumulated
        micro-batches); the outputs are None when some process's loss was not finite: then every process
        skips the batch.
        """
        accelerator, counters = self.accelerator, self.counters
        inputs = {k: batch[k].to(accelerator.device) for k in MODEL_INPUTS if k in batch}
        spec_augment = self.spec_augment
        if spec_augment is not None and (kind != LABELED_STEP or self.config.spec_augment.batches == "all"):
            inputs["input_features"] = spec_augment(
                inputs["input_features"], inputs["attention_mask"], num_updates=counters.num_updates, generator=self.augment_generator
            )
            counters.spec_augmented_batches += spec_augment.is_active(counters.num_updates)
        with accelerator.accumulate(self.model):
            outputs = self.model(**inputs)
            finite = torch.isfinite(outputs.loss.detach()).float()
            all_finite = bool(accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes)  # sync point
            if not all_finite:
                counters.skipped_non_finite += 1
                logger.warning(
                    "non-finite loss at update %d (batch %s...): batch skipped, %d so far",
                    counters.num_updates, batch["ids"][:3], counters.skipped_non_finite,
                )  # fmt: skip
                self.optimizer.zero_grad(set_to_none=True)
                return None, None
            accelerator.backward(outputs.loss)
            grad_norm = None
            max_grad_norm = self.config.optim.max_grad_norm
            if accelerator.sync_gradients and max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return outputs, grad_norm

    def count_step(self, kind: str, batch: dict, outputs) -> None:
        """A trained step's losses and audio into the log window; a labeled one's seconds per language."""
        window = self.window
        window.loss += outputs.loss.item()
        window.ctc_loss += outputs.ctc_loss.item() if outputs.ctc_loss is not None else 0.0
        window.lid_loss += outputs.lid_loss.item() if outputs.lid_loss is not None else 0.0
        window.steps += 1
        window.audio_seconds += float(batch["durations"].sum())
        if kind == LABELED_STEP:
            for language_id, seconds in zip(batch["language_ids"].tolist(), batch["durations"].tolist()):
                self.counters.language_seconds[language_id] += seconds

    def finish_update(self) -> None:
        """After the optimizer step of an update: the lr schedule, the count, the EMA teacher, the bar."""
        self.scheduler.step()
        self.counters.num_updates += 1
        if self.teacher is not None:
            self.teacher.update(self.unwrapped)
        self.progress.update(1)

    # ---- the end ------------------------------------------------------------------------------------------

    def finish(self) -> TrainResult:
        """The final model folder and the summary, written last: it marks the run as finished."""
        self.progress.close()
        config, data, counters, output_dir = self.config, self.data, self.counters, self.output_dir
        final_model = output_dir / FINAL_MODEL
        realized_seconds = {code: hours * 3600 for code, hours in self.language_hours().items()}
        summary = {
            "num_updates": counters.num_updates,
            "best_dev_cer": counters.best_dev_cer if math.isfinite(counters.best_dev_cer) else None,
            "skipped_non_finite": counters.skipped_non_finite,
            "spec_augmented_batches": counters.spec_augmented_batches,  # of the trained batches (spec_augment.batches)
            "unknown_characters": self.collator.unknown_character_summary(),
            "slimipl": (
                {
                    **self.schedule.counters(), **self.cache.counters(),
                    "pseudo_labeled_batches": counters.pseudo_labeled_batches,
                    "cropped_pseudo_labeled_batches": counters.cropped_pseudo_labeled_batches,
                    "pseudo_labeled_utterances": counters.pseudo_labeled_utterances,
                    "dropped_pseudo_labels": counters.dropped_pseudo_labels,
                }
                if config.slimipl.enabled
                else None
            ),  # fmt: skip
            "languages": language_hours_report(data.train_set, config.data.language_temperature, realized_seconds) if not data.streaming else {
                **(data.stream_mix or {"temperature": 1.0}), "realized_hours": {code: value / 3600 for code, value in sorted(realized_seconds.items())},
            },  # fmt: skip
            "parameters": parameter_counts(self.unwrapped),
            "mixed_precision": self.accelerator.mixed_precision,  # as run (train.mixed_precision: auto resolved)
            # the decoded-audio cache (data.audio_cache_gb): this invocation's hits and decodes, what the process holds
            "audio_cache": process_audio_cache().stats(since=self.audio_cache_start),
            "best_model": str(output_dir / BEST_MODEL) if data.dev_sets else None,
            "final_model": str(final_model),
        }
        if self.accelerator.is_main_process:
            save_model_folder(self.unwrapped, self.processor, final_model)
            write_json_atomically(output_dir / FINISHED_MARKER, summary)
            logger.info("finished %d updates; final model %s; summary %s", counters.num_updates, final_model, output_dir / FINISHED_MARKER)
            if summary["audio_cache"]["budget_gb"] > 0:
                logger.info("decoded-audio cache (main process): %s", summary["audio_cache"])
        self.accelerator.wait_for_everyone()
        if config.train.log_with:
            self.accelerator.end_training()
        best_model = output_dir / BEST_MODEL if data.dev_sets else None
        return TrainResult(counters.num_updates, counters.best_dev_cer, best_model, final_model, output_dir, self.unwrapped)


__all__ = [
    "BatchSource",
    "TrainResult",
    "average_dev_cer",
    "build_optimizer",
    "evaluate",
    "linear_warmup_with_halving",
    "new_model_config",
    "save_model_folder",
    "train",
    "truncate_metrics",
]
