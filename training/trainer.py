"""The trainer: supervised multilingual CTC + LID training and slimIPL, the accelerate way (docs/design.md §4-5).

`train(config)` is one function, read top to bottom (STYLE: nanoGPT, accelerate's complete example):

    Accelerator -> data -> processor + model -> optimizer + schedule -> prepare -> resume
      -> loop: pick the step's kind (labeled / unlabeled, slimIPL) -> batch -> SpecAugment
               -> forward -> non-finite check -> backward -> clip -> update
               -> log / evaluate (gather across processes) / checkpoint
      -> final model folder

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
import pickle
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from datasets import concatenate_datasets
from tqdm.auto import tqdm

from modeling_mlpl import AUTO_LANGUAGE, MlplConfig, MlplForCTC, MlplProcessor, build_language_characters, constrain_to_language

from .adapters import load_initial_model, parameter_counts, run_identity
from .augment import SpecAugment
from .batching import DurationBatchSampler, DurationBucketingStream, LanguageBalancedBatchSampler, language_sampling_shares
from .collate import MlplCollator
from .config import MODEL_SIZES, ExperimentConfig, SourceConfig, config_to_dict, save_config
from .files import replace_directory, write_json_atomically, write_text_atomically
from .header_index import HeaderScan
from .data import EXAMPLE_COLUMNS, DecodeTransform, drop_long_clips, example_durations, example_languages, records_of
from .inference import FRAMES_PER_SECOND, chunked_logits, greedy_token_ids, pad_labels, transcribe_batch
from .metrics import compute_asr_metrics, flatten_metrics
from .run_folder import claim_run_folder
from .streaming import load_balanced_stream, load_training_stream, stream_batches, stream_languages, stream_transcripts, streams_requested, training_stream
from .sources import load_source
from .slimipl import (
    LABELED_STEP,
    EmaTeacher,
    PseudoLabelCache,
    SlimIPLSchedule,
    lower_regularization,
    pseudo_labeling_mode,
)

logger = logging.getLogger("mlpl.trainer")

MODEL_INPUTS = ("input_features", "attention_mask", "labels", "language_ids")
CHECKPOINTS = "checkpoints"
BEST_MODEL = "best"
FINAL_MODEL = "final"
FINISHED_MARKER = "train_summary.json"  # written last: a run that has it is complete
DURATION_CACHE = "duration_cache"  # clip durations of local folders, per clip folder (training.header_index)


# ---------------------------------------------------------------------------------------------------------
# Pieces the loop calls. Each one is used by the trainer, the recipe and the tests alike.
# ---------------------------------------------------------------------------------------------------------


def load_map_style(sources: list[SourceConfig], what: str, max_clip_seconds: float | None = None, header_scan: HeaderScan | None = None):
    """The sources as ONE map-style dataset (records concatenated, decoded on access), or None; clips longer
    than `max_clip_seconds` (data.max_clip_seconds) are counted skips. `header_scan`: how clip durations are
    read (worker processes, cache folder)."""
    if not sources:
        return None
    datasets = []
    for source in sources:
        if source.streaming:
            raise ValueError(
                f"{what} source {source.path} has streaming: true; only data.train can be streamed (training.streaming). "
                f"Load the {what} data map-style (streaming: false)"
            )
        datasets.append(load_source(source, header_scan=header_scan))
    if len(datasets) == 1:
        dataset = datasets[0]
    else:
        records = [records_of(d).select_columns(list(EXAMPLE_COLUMNS)) for d in datasets]
        records = [r.cast(records[0].features) for r in records]
        dataset = concatenate_datasets(records).with_transform(DecodeTransform())
    return drop_long_clips(dataset, max_clip_seconds, f"{what} data", "data.max_clip_seconds")


def training_sampler(dataset, data, seed: int, num_replicas: int, rank: int) -> DurationBatchSampler:
    """The batch sampler of the labeled training data: natural proportions (`data.language_temperature` 1),
    or language-balanced by temperature (`LanguageBalancedBatchSampler`)."""
    options = {"seed": seed, "num_replicas": num_replicas, "rank": rank, "max_batch_size": data.max_batch_size}
    if data.language_temperature == 1:
        return DurationBatchSampler.from_dataset(dataset, data.max_batch_seconds, **options)
    return LanguageBalancedBatchSampler.from_dataset(dataset, data.max_batch_seconds, data.language_temperature, **options)


def language_hours_report(dataset, temperature: float, realized_seconds: dict[str, float]) -> dict:
    """What the run summary says about the languages of the training data: the natural and target shares
    of its audio, and the hours (and shares) of it that training steps actually used."""
    seconds: dict[str, float] = {}
    for language, duration in zip(example_languages(dataset), example_durations(dataset)):
        seconds[language] = seconds.get(language, 0.0) + float(duration)
    realized_total = sum(realized_seconds.values())
    return {
        "temperature": temperature,
        "hours": {code: value / 3600 for code, value in sorted(seconds.items())},
        "natural_share": language_sampling_shares(dict(sorted(seconds.items())), 1.0),
        "target_share": language_sampling_shares(dict(sorted(seconds.items())), temperature),
        "realized_hours": {code: realized_seconds.get(code, 0.0) / 3600 for code in sorted(seconds)},
        "realized_share": {code: realized_seconds.get(code, 0.0) / realized_total if realized_total else 0.0 for code in sorted(seconds)},
    }


def dataset_languages(dataset) -> list[str]:
    return sorted(records_of(dataset).unique("language")) if dataset is not None else []


def new_model_config(config: ExperimentConfig, vocab_size: int, languages: list[str]) -> MlplConfig:
    """MlplConfig for a model trained from scratch: the size preset, the overrides, the data's symbols and languages."""
    values = {**MODEL_SIZES[config.model.size], **config.model.overrides, "vocab_size": vocab_size, "languages": languages}
    return MlplConfig(**values)


def training_language_characters(sources, existing: dict[str, str] | None = None) -> dict[str, str] | None:
    """Each language's character inventory for the model's config (docs/design.md §3.1): the characters of the
    labeled training transcripts (pseudo-label sets left out: their stray letters are what script-constrained
    decoding removes), added to those the initial model already has."""
    labeled = [source for source in sources if source.kind != "pseudo_labels"]
    merged = dict(existing or {})
    for code, characters in (build_language_characters(stream_transcripts(labeled)) if labeled else {}).items():
        merged[code] = "".join(sorted(set(merged.get(code, "")) | set(characters)))
    return merged or None


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


def linear_warmup_with_halving(warmup_updates: int, halve_at: int | None):
    """lr factor for update `n` (0-based): linear warm-up to 1 over `warmup_updates`, then 1, halved
    once from update `halve_at` on (docs/design.md §4: 64k warm-up, halved at 250k)."""

    def factor(update: int) -> float:
        value = min(1.0, (update + 1) / warmup_updates) if warmup_updates > 0 else 1.0
        return value * (0.5 if halve_at is not None and update >= halve_at else 1.0)

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


def batches_state(sampler, position: dict) -> dict:
    """What a checkpoint keeps of a batch source: a sampler's epoch and consumed batches, or a stream's state."""
    return sampler.state_dict() if isinstance(sampler, DurationBucketingStream) else sampler.state_dict(position["consumed"])


def restore_batches(sampler, position: dict, state: dict) -> None:
    sampler.load_state_dict(state)
    position["consumed"] = state.get("position", 0)  # (a stream keeps its position in its own state)


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
            for batch in tqdm(loader, desc=f"eval {name}", leave=False, disable=not accelerator.is_local_main_process):
                if batch is None:
                    continue
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                decoded = transcribe_batch(unwrapped, batch, processor.tokenizer)
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


def checkpoint_steps(output_dir: Path) -> list[Path]:
    """The finished `checkpoints/step_N/` folders, oldest first (`step_N.tmp` is a save in progress)."""
    steps = [p for p in (output_dir / CHECKPOINTS).glob("step_*") if p.name[len("step_") :].isdigit()]
    return sorted(steps, key=lambda p: int(p.name[len("step_") :]))


def newest_checkpoint(output_dir: Path) -> Path | None:
    steps = [p for p in checkpoint_steps(output_dir) if (p / "trainer_state_rank0.pt").is_file()]
    return steps[-1] if steps else None


def _unpickling_reason(error: Exception) -> str:
    """The line of torch's weights_only error that says what the file asked for."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(error).__name__)


def _refusal(path: Path, error: Exception, what: str) -> ValueError:
    return ValueError(
        f"{path}: refusing to load this {what}: it holds objects other than tensors and plain values "
        f"({_unpickling_reason(error)}). A genuine mlpl checkpoint never does; delete the checkpoint folder "
        f"{path.parent} (or train into a new output_dir) and resume from an older one."
    )


def load_trainer_state(path: Path) -> dict:
    """A process's trainer state (`trainer_state_rank{r}.pt`), read with `weights_only=True`.

    The file holds only tensors, numbers, strings, lists and dicts, so the restricted unpickler reads a
    genuine one; a file that asks for anything else (a crafted pickle that would run code on `--resume`)
    is refused with an error naming it, and its payload never runs.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refusal(path, error, "trainer state") from None


def _offending_file(checkpoint: Path) -> tuple[Path, Exception] | tuple[None, None]:
    """The first pickle of an accelerate checkpoint folder that the restricted unpickler refuses."""
    from accelerate.utils import load as accelerate_load  # accelerate's own loader: weights_only + numpy RNG types

    for path in sorted(checkpoint.iterdir()):
        if path.suffix in (".bin", ".pkl", ".pt") and path.is_file():
            try:
                accelerate_load(path, map_location="cpu")
            except pickle.UnpicklingError as error:
                return path, error
    return None, None


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> dict:
    """accelerate's state (model, optimizer, RNG) and this process's trainer state from `checkpoint`.

    Everything is read with the restricted unpickler (accelerate loads with `weights_only=True`): a crafted
    file is refused with an error naming it, and its payload never runs. accelerate skips random states
    it cannot read with an INFO line only; here that is a WARNING naming the file, since the resumed run
    then draws other dropout masks and augmentations than an uninterrupted one.
    """
    from accelerate.utils import load as accelerate_load

    random_states = checkpoint / f"random_states_{accelerator.process_index}.pkl"
    try:
        accelerate_load(random_states)
    except Exception as error:  # accelerate catches every error here too, and goes on
        logger.warning(
            "could not load the random states %s (%s): resuming without them, so this run is no longer an exact "
            "continuation of the interrupted one (dropout masks and augmentation will differ)",
            random_states, str(error).splitlines()[0] if str(error) else type(error).__name__,
        )
    try:
        accelerator.load_state(str(checkpoint))
    except pickle.UnpicklingError as error:
        path, refused = _offending_file(checkpoint)
        raise _refusal(path or checkpoint, refused or error, "checkpoint file") from None
    return load_trainer_state(checkpoint / f"trainer_state_rank{accelerator.process_index}.pt")


@dataclass
class TrainResult:
    num_updates: int
    best_dev_cer: float
    best_model: Path | None
    final_model: Path
    output_dir: Path
    model: Any = None  # the trained model (unwrapped), as this process holds it


# ---------------------------------------------------------------------------------------------------------
# The training function.
# ---------------------------------------------------------------------------------------------------------


# What may change between invocations of one run: the run folder's identity (training.run_folder) ignores it.
RUN_IGNORED_KEYS = (
    "train.output_dir", "train.max_updates", "train.log_with", "train.keep_last", "data.num_workers", "data.duration_cache_dir",
    "data.scan_workers",
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


def train(config: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train as `config` says into `train.output_dir`; `resume` continues from its newest checkpoint.

    The main process first claims the folder (training.run_folder): a lock against a second concurrent run,
    and a refusal of a folder that holds another run (naming the keys that differ) unless `overwrite`,
    which deletes that run first.
    """
    if not _is_main_process():
        return _train(config, resume)
    with claim_run_folder(
        config.train.output_dir, run_identity(config_to_dict(config)), ignore=RUN_IGNORED_KEYS, overwrite=overwrite, resume=resume,
        has_progress=lambda folder: bool(checkpoint_steps(folder)), what="training (training.trainer.train)",
    ):  # fmt: skip
        return _train(config, resume)


def _train(config: ExperimentConfig, resume: bool) -> TrainResult:
    output_dir = Path(config.train.output_dir)
    slimipl = config.slimipl
    # Layerdrop skips whole branches, so some parameters get no gradient in a step: DDP must be told.
    layerdrop_possible = (config.model.layerdrop or 0) > 0 or slimipl.enabled or config.model.layerdrop is None
    accelerator = Accelerator(
        gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
        mixed_precision=config.train.mixed_precision,
        log_with=config.train.log_with or None,
        project_dir=str(output_dir),
        cpu=config.train.cpu,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=layerdrop_possible)],
    )
    set_seed(config.train.seed)
    main = accelerator.is_main_process
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")
    logger.info("training into %s with %d process(es) on %s", output_dir, accelerator.num_processes, accelerator.device)

    # ---- data -------------------------------------------------------------------------------------------
    max_seconds = config.data.max_clip_seconds
    scan = HeaderScan(config.data.duration_cache_dir or output_dir / DURATION_CACHE, config.data.scan_workers)
    if not config.data.train:
        raise ValueError("data.train is empty: the trainer needs labeled data (add a source under data.train)")
    streaming = streams_requested(config.data.train, "train")
    temperature = config.data.language_temperature
    stream_mix = None  # streamed data.train with a language temperature: its target mix (training.streaming)
    with accelerator.main_process_first():  # the first process reads the headers, the others find them cached
        train_set = None if streaming else load_map_style(config.data.train, "train", max_seconds, scan)
        if streaming and temperature != 1:
            train_stream, stream_mix = load_balanced_stream(config.data.train, max_seconds, temperature, config.train.seed)
        else:
            train_stream = load_training_stream(config.data.train, max_seconds) if streaming else None
        dev_sets = {f"{s.kind}:{Path(s.path).name}:{s.split}": load_map_style([s], "dev", max_seconds, scan) for s in config.data.dev}
        if slimipl.enabled and not config.data.unlabeled:
            raise ValueError("slimipl.enabled is true but data.unlabeled is empty: add the unlabeled source(s)")
        unlabeled_streaming = slimipl.enabled and streams_requested(config.data.unlabeled, "unlabeled")
        unlabeled_set = load_map_style(config.data.unlabeled, "unlabeled", max_seconds, scan) if slimipl.enabled and not unlabeled_streaming else None
        unlabeled_stream = load_training_stream(config.data.unlabeled, max_seconds, "unlabeled") if unlabeled_streaming else None

    # ---- processor and model --------------------------------------------------------------------------
    transcripts = stream_transcripts(config.data.train) if streaming else None  # (language, sentence), no audio
    train_languages = sorted({language for language, _ in transcripts}) if streaming else dataset_languages(train_set)
    data_languages = sorted(
        set(train_languages).union(
            *(dataset_languages(d) for d in dev_sets.values()),
            stream_languages(config.data.unlabeled) if unlabeled_streaming else dataset_languages(unlabeled_set),
        )
    )
    if config.model.init_from:
        processor = MlplProcessor.from_pretrained(config.model.init_from)
        model = load_initial_model(config.model.init_from, config.adapters)  # + a LoRA adapter with adapters.enabled
        missing = sorted(set(data_languages) - set(model.config.language_codes))
        if model.lid_head is not None and missing:
            raise ValueError(
                f"the data has languages {missing} that {config.model.init_from} has no LID class for "
                f"(it knows {model.config.language_codes}); filter the sources with `languages:`"
            )
        logger.info("initialised from %s", config.model.init_from)
    else:
        if config.adapters.enabled:
            raise ValueError("adapters.enabled needs model.init_from: the model folder (or adapter folder) to adapt")
        sentences = [sentence for _, sentence in transcripts] if streaming else records_of(train_set)["sentence"]
        processor = MlplProcessor.from_transcripts(sentences)
        model = MlplForCTC(new_model_config(config, len(processor.tokenizer), data_languages))
        logger.info(
            "new %s model: %d parameters, %d symbols, languages %s",
            config.model.size, model.num_parameters(), len(processor.tokenizer), data_languages,
        )
    model.config.language_characters = training_language_characters(config.data.train, model.config.language_characters)
    model.set_regularization(dropout=config.model.dropout, layerdrop=config.model.layerdrop)
    if config.model.lid_loss_weight is not None:
        model.config.lid_loss_weight = config.model.lid_loss_weight
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    language_to_id = {code: i for i, code in enumerate(model.config.language_codes)}
    collator = MlplCollator(
        processor.feature_extractor, processor.tokenizer, language_to_id, on_unknown_characters=config.data.on_unknown_characters
    )

    world, rank = accelerator.num_processes, accelerator.process_index
    if (streaming or unlabeled_streaming) and config.data.num_workers:
        logger.warning(
            "data.num_workers=%d is not used for streamed data: streams decode in the training process "
            "(training/streaming.py, stream_batches); map-style sources use the workers", config.data.num_workers,
        )
    if streaming:
        train_sampler = training_stream(train_stream, config.data, config.train.seed, world, rank)
    else:
        train_sampler = training_sampler(train_set, config.data, config.train.seed, world, rank)
    train_position = {"consumed": 0}
    unlabeled_sampler, unlabeled_position = None, {"consumed": 0}
    if unlabeled_streaming:
        unlabeled_sampler = training_stream(unlabeled_stream, config.data, config.train.seed + 1, world, rank)
    elif slimipl.enabled:
        unlabeled_sampler = DurationBatchSampler.from_dataset(
            unlabeled_set, config.data.max_batch_seconds, seed=config.train.seed + 1, num_replicas=world, rank=rank, max_batch_size=config.data.max_batch_size
        )
    if streaming:
        logger.info("train: streamed, %d transcripts, buffers of %d examples", len(transcripts), config.data.stream_buffer_size)
    else:
        logger.info(
            "train: %d utterances, %.2f h, %d batches per process per epoch",
            len(train_set), example_durations(train_set).sum() / 3600, len(train_sampler),
        )
    if temperature != 1:
        target, natural = (stream_mix["target_share"], stream_mix["natural_share"]) if streaming else (train_sampler.target_shares, train_sampler.natural_shares)
        logger.info(
            "language temperature %g: target shares of the training %s %s (natural %s)", temperature, "utterances" if streaming else "audio",
            {k: round(v, 4) for k, v in target.items()}, {k: round(v, 4) for k, v in natural.items()},
        )  # fmt: skip

    # ---- optimisation ---------------------------------------------------------------------------------
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config.optim)  # (an adapter's base is frozen)
    # Stepped by hand once per update (accelerate's prepared scheduler steps once per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_with_halving(config.optim.warmup_updates, config.optim.halve_lr_at))
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    spec = config.spec_augment
    spec_augment = (
        SpecAugment(spec.num_freq_masks, spec.freq_mask_width, spec.num_time_masks, spec.time_mask_width, spec.time_mask_max_ratio, spec.start_update)
        if spec.enabled
        else None
    )
    augment_generator = torch.Generator().manual_seed(config.train.seed)
    schedule = SlimIPLSchedule(slimipl.supervised_warmup_updates, slimipl.unlabeled_ratio, slimipl.cropping_warmup_updates, seed=config.train.seed)
    cache = PseudoLabelCache(slimipl.cache_size, slimipl.replace_probability, seed=config.train.seed + rank)
    teacher = None
    state = {
        "num_updates": 0,
        "best_dev_cer": math.inf,
        "skipped_non_finite": 0,
        "regularization_lowered": False,
        "pseudo_labeled_batches": 0,
        "cropped_pseudo_labeled_batches": 0,  # made during the cropping warm-up (docs/design.md §5)
        "language_seconds": [0.0] * len(unwrapped.config.language_codes),  # this process's labeled audio trained on
    }

    # ---- resume ---------------------------------------------------------------------------------------
    checkpoint = newest_checkpoint(output_dir) if resume else None
    if resume and checkpoint is None:
        logger.info("--resume: no checkpoint in %s, starting from scratch", output_dir / CHECKPOINTS)
    if checkpoint is not None:
        saved = load_checkpoint(accelerator, checkpoint)
        state.update(saved["state"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_batches(train_sampler, train_position, saved["train_sampler"])
        augment_generator.set_state(saved["augment_generator"])
        schedule.load_state_dict(saved["schedule"])
        cache.load_state_dict(saved["cache"])
        if unlabeled_sampler is not None:
            restore_batches(unlabeled_sampler, unlabeled_position, saved["unlabeled_sampler"])
        if state["regularization_lowered"]:
            lower_regularization(unwrapped, slimipl.dropout, slimipl.layerdrop)
        if saved.get("teacher") is not None:
            teacher = EmaTeacher(unwrapped, slimipl.ema_decay)
            teacher.load_state_dict(saved["teacher"])
        logger.info("resumed from %s at update %d", checkpoint, state["num_updates"])

    def save_checkpoint() -> None:
        """accelerate's save_state (model, optimizer, RNG of every process) + each process's own trainer
        state (sampler position, schedule, its slimIPL cache, ...), written to step_N.tmp then renamed."""
        final = output_dir / CHECKPOINTS / f"step_{state['num_updates']}"
        temporary = final.with_name(final.name + ".tmp")
        if main:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        saved = {
            "state": dict(state),
            "scheduler": scheduler.state_dict(),
            "train_sampler": batches_state(train_sampler, train_position),
            "augment_generator": augment_generator.get_state(),
            "schedule": schedule.state_dict(),
            "cache": cache.state_dict(),
            "unlabeled_sampler": batches_state(unlabeled_sampler, unlabeled_position) if unlabeled_sampler else None,
            "teacher": teacher.state_dict() if teacher is not None else None,
        }
        torch.save(saved, temporary / f"trainer_state_rank{rank}.pt")
        accelerator.wait_for_everyone()
        if main:
            save_config(config, temporary / "config.yaml")
            replace_directory(temporary, final)
            steps = checkpoint_steps(output_dir)
            for old in steps[: -config.train.keep_last] if config.train.keep_last > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint %s", final)
        accelerator.wait_for_everyone()

    # ---- pseudo-labels (slimIPL): the model in eval mode, no SpecAugment, greedy, no LM (docs/design.md §5) ---------
    vocabulary = processor.tokenizer.get_vocab()

    def pseudo_label(batch: dict) -> torch.Tensor:
        crop_frames = int(slimipl.crop_seconds * FRAMES_PER_SECOND) if schedule.crops_unlabeled(state["num_updates"]) else None
        state["pseudo_labeled_batches"] += 1
        state["cropped_pseudo_labeled_batches"] += crop_frames is not None
        labeler = teacher.model if teacher is not None else unwrapped
        with pseudo_labeling_mode(labeler):
            features = batch["input_features"].to(accelerator.device)
            mask = batch["attention_mask"].to(accelerator.device)
            logits, lengths, lid_logits = chunked_logits(labeler, features, mask, crop_frames)
            if slimipl.language_constraint:  # docs/design.md §3.1: the source's language, the LID's guess if unknown
                codes = labeler.config.language_codes
                languages = [codes[index] if index >= 0 else AUTO_LANGUAGE for index in batch["language_ids"].tolist()]
                logits = constrain_to_language(logits, labeler.config, vocabulary, languages, lid_logits)
            return pad_labels(greedy_token_ids(logits, lengths, labeler.config.pad_token_id))

    labeled_batches = training_batches(train_set, train_sampler, collator, config.data.num_workers, train_position)
    unlabeled_batches = (
        training_batches(unlabeled_set, unlabeled_sampler, collator, config.data.num_workers, unlabeled_position) if slimipl.enabled else None
    )

    trackers = bool(config.train.log_with)
    if trackers:
        accelerator.init_trackers(output_dir.name, config=flatten_metrics(config_to_dict(config), "."))
    log_path = output_dir / "metrics.jsonl"
    if main and checkpoint is not None:
        dropped = truncate_metrics(log_path, state["num_updates"])
        if dropped:
            logger.info("metrics.jsonl: dropped %d row(s) logged after update %d (they are logged again)", dropped, state["num_updates"])

    def log(record: dict) -> None:
        record = {"update": state["num_updates"], **record}
        if main:
            with open(log_path, "a", encoding="utf-8") as log_file:
                log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
        if trackers:
            accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=state["num_updates"])

    def evaluate_and_keep_best() -> None:
        if not dev_sets:
            return
        results = evaluate(accelerator, model, processor, dev_sets, collator, config.data.eval_max_batch_seconds or config.data.max_batch_seconds)
        dev_cer = average_dev_cer(results)
        record = {"dev_cer": dev_cer}
        for name, result in results.items():
            record.update({f"dev/{name}/{k}": v for k, v in flatten_metrics(result).items()})
        log(record)
        if main:
            logger.info("update %d: dev CER %.4f (best %.4f)", state["num_updates"], dev_cer, state["best_dev_cer"])
        if dev_cer < state["best_dev_cer"]:
            state["best_dev_cer"] = dev_cer
            if main:
                metrics = {"update": state["num_updates"], "dev_cer": dev_cer, "dev": results}
                save_model_folder(unwrapped, processor, output_dir / BEST_MODEL, {"dev_metrics.json": metrics})
                save_config(config, output_dir / BEST_MODEL / "training_config.yaml")
        accelerator.wait_for_everyone()

    def language_hours() -> dict[str, float]:
        """Hours of labeled audio trained on so far per language, summed over processes (a collective)."""
        seconds = accelerator.reduce(torch.tensor(state["language_seconds"], dtype=torch.float64, device=accelerator.device), reduction="sum")
        return {code: value / 3600 for code, value in zip(unwrapped.config.language_codes, seconds.tolist()) if value > 0}

    # ---- the loop -------------------------------------------------------------------------------------
    progress = tqdm(
        total=config.train.max_updates, initial=state["num_updates"], desc="train", unit="update", disable=not accelerator.is_local_main_process
    )
    window = {"loss": 0.0, "ctc_loss": 0.0, "lid_loss": 0.0, "steps": 0, "audio_seconds": 0.0, "start": time.time()}
    if config.train.eval_before_training and state["num_updates"] == 0:
        evaluate_and_keep_best()  # the starting point of the dev curve (and of the stage table)
    model.train()
    while state["num_updates"] < config.train.max_updates:
        # 1. What kind of step (docs/design.md §5): labeled, or unlabeled from the pseudo-label cache.
        kind = schedule.next_step(state["num_updates"]) if slimipl.enabled else LABELED_STEP
        if kind == LABELED_STEP:
            batch = next(labeled_batches)
        else:
            if not state["regularization_lowered"]:
                lower_regularization(unwrapped, slimipl.dropout, slimipl.layerdrop)  # docs/design.md §5: from slimIPL's start
                state["regularization_lowered"] = True
                if slimipl.ema_decay is not None and teacher is None:
                    teacher = EmaTeacher(unwrapped, slimipl.ema_decay)
            cache_step = cache.step(lambda: next(unlabeled_batches), pseudo_label)
            if not cache_step.trains:
                continue  # a filling step: pseudo-labels made, no update
            batch = dict(cache_step.batch, labels=cache_step.labels)
        inputs = {k: batch[k].to(accelerator.device) for k in MODEL_INPUTS if k in batch}
        # 2. SpecAugment on labeled and on pseudo-labeled batches (the same masks for the whole batch).
        if spec_augment is not None:
            inputs["input_features"] = spec_augment(
                inputs["input_features"], inputs["attention_mask"], num_updates=state["num_updates"], generator=augment_generator
            )

        # 3. Forward, the all-process non-finite vote, backward, clip, update.
        with accelerator.accumulate(model):
            outputs = model(**inputs)
            finite = torch.isfinite(outputs.loss.detach()).float()
            all_finite = bool(accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes)  # sync point
            if not all_finite:
                state["skipped_non_finite"] += 1
                logger.warning(
                    "non-finite loss at update %d (batch %s...): batch skipped, %d so far",
                    state["num_updates"], batch["ids"][:3], state["skipped_non_finite"],
                )
                optimizer.zero_grad(set_to_none=True)
                continue
            accelerator.backward(outputs.loss)
            grad_norm = None
            if accelerator.sync_gradients and config.optim.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        window["loss"] += outputs.loss.item()
        window["ctc_loss"] += outputs.ctc_loss.item() if outputs.ctc_loss is not None else 0.0
        window["lid_loss"] += outputs.lid_loss.item() if outputs.lid_loss is not None else 0.0
        window["steps"] += 1
        window["audio_seconds"] += float(batch["durations"].sum())
        if kind == LABELED_STEP:
            for language_id, seconds in zip(batch["language_ids"].tolist(), batch["durations"].tolist()):
                state["language_seconds"][language_id] += seconds
        if not accelerator.sync_gradients:
            continue  # gradient accumulation: more micro-batches before the update
        scheduler.step()
        state["num_updates"] += 1
        if teacher is not None:
            teacher.update(unwrapped)
        progress.update(1)

        # 4. Log, evaluate, checkpoint.
        updates = state["num_updates"]
        if updates % config.train.log_every == 0 or updates == config.train.max_updates:
            elapsed = time.time() - window["start"]
            record = {
                "loss": window["loss"] / window["steps"],
                "ctc_loss": window["ctc_loss"] / window["steps"],
                "lid_loss": window["lid_loss"] / window["steps"],
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "audio_seconds_per_second": window["audio_seconds"] * accelerator.num_processes / max(elapsed, 1e-9),
                "skipped_non_finite": state["skipped_non_finite"],
            }
            if slimipl.enabled:
                record.update({f"slimipl/{k}": v for k, v in {**schedule.counters(), **cache.counters()}.items()})
            record.update({f"train_hours/{code}": hours for code, hours in language_hours().items()})
            log(record)
            progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2g}")
            window.update(loss=0.0, ctc_loss=0.0, lid_loss=0.0, steps=0, audio_seconds=0.0, start=time.time())
        if updates % config.train.eval_every == 0 or updates == config.train.max_updates:
            evaluate_and_keep_best()
            model.train()
        if updates % config.train.save_every == 0 or updates == config.train.max_updates:
            save_checkpoint()
    progress.close()

    # ---- the end: final model, summary (written last: it marks the run as finished) -------------------------
    final_model = output_dir / FINAL_MODEL
    realized_seconds = {code: hours * 3600 for code, hours in language_hours().items()}
    summary = {
        "num_updates": state["num_updates"],
        "best_dev_cer": state["best_dev_cer"] if math.isfinite(state["best_dev_cer"]) else None,
        "skipped_non_finite": state["skipped_non_finite"],
        "unknown_characters": collator.unknown_character_summary(),
        "slimipl": (
            {**schedule.counters(), **cache.counters(), **{k: state[k] for k in ("pseudo_labeled_batches", "cropped_pseudo_labeled_batches")}}
            if slimipl.enabled
            else None
        ),
        "languages": language_hours_report(train_set, temperature, realized_seconds) if not streaming else {
            **(stream_mix or {"temperature": 1.0}), "realized_hours": {code: value / 3600 for code, value in sorted(realized_seconds.items())},
        },  # fmt: skip
        "parameters": parameter_counts(unwrapped),
        "best_model": str(output_dir / BEST_MODEL) if dev_sets else None,
        "final_model": str(final_model),
    }
    if main:
        save_model_folder(unwrapped, processor, final_model)
        write_json_atomically(output_dir / FINISHED_MARKER, summary)
        logger.info("finished %d updates; final model %s; summary %s", state["num_updates"], final_model, output_dir / FINISHED_MARKER)
    accelerator.wait_for_everyone()
    if trackers:
        accelerator.end_training()
    return TrainResult(
        state["num_updates"], state["best_dev_cer"], output_dir / BEST_MODEL if dev_sets else None, final_model, output_dir, unwrapped
    )


__all__ = [
    "TrainResult",
    "average_dev_cer",
    "build_optimizer",
    "checkpoint_steps",
    "dataset_languages",
    "evaluate",
    "linear_warmup_with_halving",
    "load_checkpoint",
    "load_map_style",
    "new_model_config",
    "newest_checkpoint",
    "save_model_folder",
    "language_hours_report",
    "train",
    "training_sampler",
    "truncate_metrics",
]
