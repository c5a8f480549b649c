"""Experiment configuration: dataclasses whose defaults are the paper's values (docs/design.md §4-5).

One YAML file per experiment, overridden from the command line with dotted `key=value` pairs:

    accelerate launch scripts/train.py --config my_run.yaml optim.lr=0.01 train.max_updates=2000

`load_config` checks every key against the dataclasses (a typo is an error naming the key and the
valid ones) and converts values to the field's type; `save_config` writes the resolved config beside
every checkpoint, so a run can always be reproduced from its output folder.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The kinds of data source (docs/design.md §8): the one vocabulary of `SourceConfig.kind`, `--data` detection and
# every dispatch on kind (mlpl.sources.SOURCE_KIND_READERS reads each).
SOURCE_KINDS = COMMON_VOICE, VOXPOPULI, FLASHLIGHT_LIST, HUB, PSEUDO_LABELS, VOXPOPULI_ASR = (
    "common_voice", "voxpopuli", "flashlight", "hub", "pseudo_labels", "voxpopuli_asr"
)

# Model size presets (docs/design.md §2): MlplConfig's defaults are the base model; `model.overrides` apply on top.
MODEL_SIZES = {"base": {}, "large": {"hidden_size": 1536, "intermediate_size": 6144}}
# MlplConfig values the trainer sets from the data, never from `model.overrides`.
MODEL_VALUES_FROM_DATA = ("vocab_size", "languages", "num_languages")


# ---------------------------------------------------------------------------------------------------------
# Range checks: every value is checked when its section is built, so a bad one fails at once, naming
# `section.key`, and never after the first update (a 0 that divides, a negative count that "finishes").
# ---------------------------------------------------------------------------------------------------------

POSITIVE = (lambda value: value > 0, "> 0")
COUNT = (lambda value: value >= 1, ">= 1")
NON_NEGATIVE = (lambda value: value >= 0, ">= 0")
PROBABILITY = (lambda value: 0 <= value <= 1, "in [0, 1]")
DROP_RATE = (lambda value: 0 <= value < 1, "in [0, 1)")
DECAY = (lambda value: 0 < value < 1, "in (0, 1)")


def one_of(*choices):
    return (lambda value: value in choices, f"one of {list(choices)}")


def check_ranges(config, section: str, ranges: dict) -> None:
    """ValueError naming `section.key`, its value and the allowed range for the first value out of range
    (None means "not set" and is always allowed where the field may be None)."""
    for name, (allowed, description) in ranges.items():
        value = getattr(config, name)
        values = value if isinstance(value, (tuple, list)) else [value]  # a tuple (betas): each item
        if any(item is not None and not allowed(item) for item in values):
            raise ValueError(f"{section}.{name}={value!r} is out of range: it must be {description}")


@dataclass
class SourceConfig:
    """One data source of the data layer (mlpl.data, docs/design.md §8); `mlpl.sources.load_source` reads it.

    kind: "common_voice" (local release folder), "voxpopuli" (local unlabeled folder), "voxpopuli_asr" (local
        copy of VoxPopuli's transcribed data: `<lang>/asr_<split>.tsv`; `columns: {sentence: normalized_text}`
        reads the normalized transcripts instead of raw_text), "flashlight" (list file; needs `language`),
        "hub" (dataset id or local parquet folder; `name`, `columns`, `language`, `streaming`), or
        "pseudo_labels" (a folder written by mlpl.pseudo_label).
    path: folder, file or dataset id. Relative paths are resolved against the config file's folder.
    """

    kind: str = "common_voice"
    path: str = ""
    split: str = "train"
    languages: list[str] | None = None
    language: str | None = None  # flashlight / hub: the language of every example
    name: str | None = None  # hub: dataset configuration
    columns: dict[str, str | None] | None = None  # hub: schema role -> column
    streaming: bool = False
    labeled: bool = True  # flashlight / hub: False reads the source as unlabeled audio (transcripts ignored)

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source kind {self.kind!r} is not one of {SOURCE_KINDS}")
        if not self.path:
            raise ValueError(f"a {self.kind} source needs a path (got path={self.path!r})")
        if self.kind == FLASHLIGHT_LIST and not self.language:
            raise ValueError(f"flashlight list {self.path}: set `language:` (lists carry no language column)")


@dataclass
class DataConfig:
    train: list[SourceConfig] = field(default_factory=list)  # labeled training data
    dev: list[SourceConfig] = field(default_factory=list)  # evaluated every `train.eval_every` updates
    unlabeled: list[SourceConfig] = field(default_factory=list)  # slimIPL's unlabeled data
    max_batch_seconds: float = 200.0  # docs/design.md §4: 200 s of audio per GPU (base), 50 s (large)
    max_batch_size: int | None = None
    eval_max_batch_seconds: float | None = None  # default: max_batch_seconds
    # Longer clips are counted skips (memory grows with length: 10 min asks for a 12.8 GB tensor). The
    # data's clips are 1-30 s (Common Voice up to 10 s, VoxPopuli segments up to 30 s); None: no limit.
    max_clip_seconds: float | None = 60.0
    num_workers: int = 0
    # Decoded 16 kHz audio kept in memory, per decoding process, so later epochs and evaluations do not decode
    # a clip again (mlpl.audio_cache, exact): 0 = off. One hour of audio holds 0.21 GiB. "auto": what the run's
    # map-style sets hold, at most a quarter of the available memory, 0 with num_workers > 0.
    audio_cache_gb: float | str = 0.0
    on_unknown_characters: str = "warn"  # labels the tokenizer cannot encode: "warn" (count, report) or "error"
    # Language-balanced sampling of data.train: language l's share of each epoch's audio is proportional to
    # n_l ** (1 / T), n_l its hours (mlpl.batching.LanguageBalancedBatchSampler). 1 = natural proportions
    # (every utterance once per epoch), 5 = common in multilingual ASR, .inf = uniform.
    language_temperature: float = 1.0
    # Clip durations of map-style sources are read from the headers by `scan_workers` processes (None: every
    # CPU) and cached per clip folder in `duration_cache_dir` (None: <train.output_dir>/duration_cache), so a
    # second run reads no headers (mlpl.header_index). Never inside the dataset folder.
    duration_cache_dir: str | None = None
    scan_workers: int | None = None
    # data.train with `streaming: true` (mlpl.streaming): examples per duration-bucketing buffer.
    stream_buffer_size: int = 1000

    def __post_init__(self):
        check_ranges(self, "data", {
            "max_batch_seconds": POSITIVE, "max_batch_size": COUNT, "eval_max_batch_seconds": POSITIVE,
            "max_clip_seconds": POSITIVE, "num_workers": NON_NEGATIVE, "on_unknown_characters": one_of("warn", "error"),
            "language_temperature": (POSITIVE[0], "> 0 (1 = natural proportions, .inf = uniform)"), "scan_workers": COUNT,
            "stream_buffer_size": COUNT,
        })  # fmt: skip
        if isinstance(self.audio_cache_gb, str) and self.audio_cache_gb != "auto":
            raise ValueError(f"data.audio_cache_gb={self.audio_cache_gb!r}: expected a number of GB (0 = off) or auto")
        if not isinstance(self.audio_cache_gb, str):
            check_ranges(self, "data", {"audio_cache_gb": NON_NEGATIVE})


@dataclass
class ModelConfig:
    """Either `init_from` (a model folder: continue / fine-tune it with its processor) or a new model:
    `size` = "base" (docs/design.md §2, 275M) or "large" (1.06B), with `overrides` of any MlplConfig field
    (e.g. a small demo model). A new model's vocabulary is built from the training transcripts and
    its LID classes from the languages of all sources."""

    init_from: str | None = None
    size: str = "base"
    overrides: dict[str, Any] = field(default_factory=dict)
    gradient_checkpointing: bool = False
    lid_loss_weight: float | None = None  # gamma (docs/design.md §2.6: 1); None keeps the model config's value
    dropout: float | None = None  # None keeps the model config's value
    layerdrop: float | None = None

    def __post_init__(self):
        check_ranges(self, "model", {"size": one_of(*MODEL_SIZES), "lid_loss_weight": NON_NEGATIVE, "dropout": DROP_RATE, "layerdrop": DROP_RATE})
        if self.overrides and not self.init_from:  # (an init_from model keeps its own config)
            check_model_overrides(self.overrides, self.size)


@dataclass
class OptimConfig:
    optimizer: str = "adagrad"  # docs/design.md §4: Adagrad; "adamw" as an option
    lr: float = 0.03  # slimIPL; 0.01 for from-scratch CV+PL training and CV fine-tuning (docs/design.md §4)
    eps: float = 1e-8
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)  # adamw only
    warmup_updates: int = 64_000  # docs/design.md §4: linear warm-up over 64k updates
    halve_lr_at: int | None = 250_000  # docs/design.md §4: lr halved once at 250k updates
    decay_from: int | None = None  # from this update, lr falls linearly to 0 at train.max_updates (None: no decay)
    max_grad_norm: float | None = 0.1  # docs/design.md §4: gradient-norm clip 0.1
    gradient_accumulation_steps: int = 1

    def __post_init__(self):
        check_ranges(self, "optim", {
            "optimizer": one_of("adagrad", "adamw"), "lr": POSITIVE, "eps": POSITIVE, "weight_decay": NON_NEGATIVE,
            "betas": DROP_RATE, "warmup_updates": NON_NEGATIVE, "halve_lr_at": NON_NEGATIVE, "decay_from": NON_NEGATIVE,
            "max_grad_norm": (POSITIVE[0], "> 0 (null turns clipping off)"), "gradient_accumulation_steps": COUNT,
        })  # fmt: skip


SPEC_AUGMENT_BATCHES = ("all", "pseudo_labeled")


@dataclass
class SpecAugmentConfig:
    enabled: bool = True
    num_freq_masks: int = 2
    freq_mask_width: int = 30
    num_time_masks: int = 2
    time_mask_width: int = 50
    time_mask_max_ratio: float = 0.1
    start_update: int = 0  # docs/design.md §4: 50k when training from scratch on CV+PL
    # Which batches are masked: "all", or "pseudo_labeled" (slimIPL's PL batches only, the noisy student's
    # noise; labeled batches stay clean, so a labeled-only control trains exactly without SpecAugment) (§5)
    batches: str = "all"

    def __post_init__(self):
        check_ranges(self, "spec_augment", {
            "batches": one_of(*SPEC_AUGMENT_BATCHES),
            "num_freq_masks": NON_NEGATIVE, "freq_mask_width": NON_NEGATIVE, "num_time_masks": NON_NEGATIVE,
            "time_mask_width": NON_NEGATIVE, "time_mask_max_ratio": PROBABILITY, "start_update": NON_NEGATIVE,
        })  # fmt: skip


@dataclass
class LMDecodingOptions:
    """Pseudo-labels from an n-gram LM's beam search instead of greedy CTC (docs/design.md §7; iterative
    pseudo-labeling's way, not slimIPL's): the options `SlimIPLConfig` and `PseudoLabelConfig` share.

    lm: an ARPA file for every language, or a path with `{language}` (languages without a file stay greedy).
    lexicon: "lm" (the LM's words), a word-list / Flashlight lexicon file, or None (lexicon-free).
    lm_alpha, lm_beta: LM weight and word score; None: the weights chosen on dev in `lm_decoding`.
    lm_decoding: an `lm_decoding.json` (or its folder) from `scripts/evaluate.py --lm ... --grid-search` on dev;
        None: the one in the labeling model's folder, if any (else the decoder's defaults).
    """

    lm: str | None = None
    lexicon: str | None = None
    lm_alpha: float | None = None
    lm_beta: float | None = None
    lm_decoding: str | None = None

    def check_lm_options(self, section: str) -> None:
        if self.lm is None and any(value is not None for value in (self.lexicon, self.lm_alpha, self.lm_beta, self.lm_decoding)):
            raise ValueError(f"{section}: lexicon / lm_alpha / lm_beta / lm_decoding set without lm: name the ARPA file(s) with lm")


LM_OPTION_KEYS = tuple(option.name for option in dataclasses.fields(LMDecodingOptions))
# slimIPL options added after run folders existed, with their "off" value (mlpl.run_folder.without_keys_added_later)
SLIMIPL_KEYS_ADDED_LATER = {**dict.fromkeys(LM_OPTION_KEYS), "oracle_transcripts": None}
OPTIM_KEYS_ADDED_LATER = {"decay_from": None}
SPEC_AUGMENT_KEYS_ADDED_LATER = {"batches": "all"}


@dataclass
class SlimIPLConfig(LMDecodingOptions):
    enabled: bool = False
    supervised_warmup_updates: int = 20_000  # M (slimIPL)
    unlabeled_ratio: int = 10  # lambda (mling_pl)
    cache_size: int = 1000  # C
    replace_probability: float = 0.1  # p
    cropping_warmup_updates: int = 10_000  # mling_pl cropping warm-up; 0 turns it off
    crop_seconds: float = 10.0
    dropout: float = 0.1  # docs/design.md §5: lowered when slimIPL starts
    layerdrop: float = 0.1
    ema_decay: float | None = None  # e.g. 0.999 for an EMA teacher
    # docs/design.md §3.1: PLs within the source language's characters (the LID's top-1 where it is unknown)
    language_constraint: bool = False
    # ours (docs/design.md §5): drop a pseudo-labeled utterance whose confidence (mean best-path log-probability
    # per frame, inference.sequence_confidence, <= 0) is below this; the batch's most confident one stays
    min_confidence: float | None = None
    # ours (docs/design.md §5, "The oracle topline"): a TSV with `id` and `sentence` columns holding the TRUE
    # transcripts of the unlabeled audio (the demo corpus's voxpopuli/answer_key.tsv); they replace the
    # pseudo-labels, everything else as in slimIPL. The most pseudo-labels could give: an ablation arm, not a recipe
    oracle_transcripts: str | None = None

    def __post_init__(self):
        check_ranges(self, "slimipl", {
            "supervised_warmup_updates": NON_NEGATIVE, "unlabeled_ratio": COUNT, "cache_size": COUNT,
            "replace_probability": PROBABILITY, "cropping_warmup_updates": NON_NEGATIVE, "crop_seconds": POSITIVE,
            "dropout": DROP_RATE, "layerdrop": DROP_RATE, "ema_decay": DECAY,
            "min_confidence": ((lambda value: value <= 0), "<= 0 (a mean log-probability; null keeps every utterance)"),
        })  # fmt: skip
        self.check_lm_options("slimipl")


@dataclass
class AdapterConfig:
    """Per-language LoRA adapters through peft instead of full model copies (mlpl.adapters, docs/design.md §6,
    "Per-language adapters"). With `enabled`, training needs `model.init_from`: a model folder (its weights are
    frozen and a new adapter trains) or an adapter folder (that adapter trains on, on its base model)."""

    enabled: bool = False
    rank: int = 8  # LoRA r
    alpha: float = 16.0  # LoRA alpha: the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the adapter's input (the base model keeps its own dropout)
    # Linear layers that get a LoRA update: attention q/k/v/out and feed-forward fc1/fc2 of every MlplEncoderLayer.
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    # Modules trained whole and saved with the adapter: the CTC head (small, and where a language's symbols are
    # scored). Not the LID head: trained on one language it learns to name that language for everything, and
    # the base's shared LID head is what routes audio to an adapter. Add "attn_layer_norm" / "final_layer_norm"
    # to train the LayerNorms too; [] trains the LoRA matrices only.
    modules_to_save: list[str] = field(default_factory=lambda: ["ctc_head"])
    # When init_from is an adapter folder: its base model (None: the folder's adapter_config.json names it).
    base_model: str | None = None

    def __post_init__(self):
        check_ranges(self, "adapters", {"rank": COUNT, "alpha": POSITIVE, "dropout": DROP_RATE})
        if not self.target_modules:
            raise ValueError("adapters.target_modules is empty; name the Linear layers to adapt, e.g. [q_proj, v_proj]")


MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16", "auto")  # "auto": bf16 where it is native (mlpl.precision)


@dataclass
class TrainConfig:
    output_dir: str = "outputs/run"
    seed: int = 0
    max_updates: int = 500_000  # docs/design.md §4: ~500k updates
    eval_every: int = 1000
    eval_before_training: bool = False  # also evaluate at update 0 (the start of the dev CER curve)
    save_every: int = 1000
    keep_last: int = 3  # step_N/ checkpoints kept
    log_every: int = 50
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16" | "auto" (bf16 where it is native: mlpl.precision)
    log_with: list[str] = field(default_factory=list)  # accelerate trackers, e.g. ["tensorboard"]
    cpu: bool = False

    def __post_init__(self):
        check_ranges(self, "train", {
            "seed": NON_NEGATIVE, "max_updates": COUNT, "eval_every": COUNT, "save_every": COUNT, "log_every": COUNT,
            "keep_last": (NON_NEGATIVE[0], ">= 0 (0 keeps every checkpoint)"), "mixed_precision": one_of(*MIXED_PRECISION_CHOICES),
        })  # fmt: skip
        if not self.output_dir:
            raise ValueError("train.output_dir is empty; name the run folder")


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    slimipl: SlimIPLConfig = field(default_factory=SlimIPLConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self):
        check_decay_from(self.optim.decay_from, self.train.max_updates)


def check_decay_from(decay_from: int | None, max_updates: int | None) -> None:
    """`optim.decay_from` (the update from which the lr falls linearly to 0) must come before the run's last update."""
    if decay_from is not None and (max_updates is None or decay_from >= max_updates):
        raise ValueError(
            f"optim.decay_from={decay_from} is not below train.max_updates={max_updates}: the lr would never decay; "
            "set it below max_updates (e.g. 0.7 x max_updates) or to null"
        )


def check_model_overrides(overrides: dict, size: str = "base") -> None:
    """`model.overrides` keys must be MlplConfig `__init__` parameters (a typo would silently train the full
    model), not values set from the data, and together with the size preset they must make a valid config."""
    import inspect

    from modeling_mlpl import MlplConfig

    fields = [name for name in inspect.signature(MlplConfig.__init__).parameters if name not in ("self", "kwargs")]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"model.overrides: unknown MlplConfig field(s) {unknown}; MlplConfig has {fields}")
    from_data = sorted(set(overrides) & set(MODEL_VALUES_FROM_DATA))
    if from_data:
        raise ValueError(f"model.overrides: {from_data} are set from the training data (its symbols and languages); remove them")
    try:
        MlplConfig(**{**MODEL_SIZES.get(size, {}), **overrides})
    except (TypeError, ValueError) as error:
        raise ValueError(f"model.overrides={overrides}: {error}") from None


# ---------------------------------------------------------------------------------------------------------
# Building, loading, overriding, saving.
# ---------------------------------------------------------------------------------------------------------


def _convert(value: Any, annotation: Any, where: str) -> Any:
    """`value` (from YAML or a command-line string) as the type `annotation` says; error names `where`."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
            if type(None) in arguments:
                return None
        errors = []
        for option in arguments:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(f"{where}: {value!r} does not fit {annotation}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(annotation):
        return build_dataclass(annotation, value, where)
    if origin is list:
        if isinstance(value, str):
            value = [item for item in value.split(",") if item] if not value.startswith("[") else yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        return [_convert(item, arguments[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        return tuple(_convert(item, arguments[0], where) for item in value)
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        if len(arguments) == 2 and dataclasses.is_dataclass(arguments[1]):  # e.g. dict[str, SourceConfig]
            return {key: build_dataclass(arguments[1], item, f"{where}.{key}") for key, item in value.items()}
        return dict(value)
    if annotation is Any:
        return yaml.safe_load(value) if isinstance(value, str) else value
    if annotation is bool:
        if isinstance(value, str):
            if value.lower() in ("true", "yes", "1"):
                return True
            if value.lower() in ("false", "no", "0"):
                return False
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            number = annotation(float(value)) if annotation is int and isinstance(value, str) and "e" in value.lower() else annotation(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and number != value:
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls, values: Any, where: str = "config"):
    """`cls(**values)` with every key checked and converted (nested dataclasses included)."""
    if isinstance(values, cls):
        return values
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; {cls.__name__} has {names}")
    converted = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in values.items()}
    return cls(**converted)


def apply_override(values: dict, override: str) -> None:
    """Apply one `dotted.key=value` to a nested dict (the YAML before conversion)."""
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like section.key=value (e.g. optim.lr=0.01)")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {override!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def _resolve_paths(config: ExperimentConfig, base: Path) -> None:
    """Relative local paths in the config are relative to the config file's folder."""

    def resolve(path: str | None) -> str | None:
        if not path:
            return path
        candidate = base / path
        return str(candidate) if not Path(path).is_absolute() and candidate.exists() else path

    for source in config.data.train + config.data.dev + config.data.unlabeled:
        source.path = resolve(source.path)
    config.model.init_from = resolve(config.model.init_from)


def read_yaml_mapping(path: str | os.PathLike, what: str = "sections") -> dict:
    """The mapping a YAML config file holds (empty file: {}); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the top level must be a mapping of {what}, got {type(values).__name__}")
    return values


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """The YAML file (or the defaults) with `overrides` applied, checked and typed."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        values = read_yaml_mapping(path)
    for override in overrides:
        apply_override(values, override)
    config = build_dataclass(ExperimentConfig, values, str(path or "config"))
    if path is not None:
        _resolve_paths(config, path.parent.resolve())
    return config


def config_to_dict(config) -> dict:
    """Plain dict (lists, not tuples) for YAML/JSON."""

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


# Keys whose values are secrets: written masked by every config writer (issue 13.7). A masked value read
# back means "not given here" (HubConfig then takes HF_TOKEN or the `hf auth login` token).
SECRET_KEYS = ("token", "hf_token", "hub_token", "api_key", "password")
MASKED = "<masked>"


def mask_secrets(values: Any) -> Any:
    """A copy of nested dicts/lists with the value of every SECRET_KEYS key (that is set) replaced by MASKED."""
    if isinstance(values, dict):
        return {
            key: MASKED if str(key).lower() in SECRET_KEYS and value not in (None, "") else mask_secrets(value)
            for key, value in values.items()
        }
    if isinstance(values, (list, tuple)):
        return [mask_secrets(value) for value in values]
    return values


def save_config(config, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (temporary name, then rename), secrets masked."""
    from .files import write_text_atomically

    values = mask_secrets(config_to_dict(config) if dataclasses.is_dataclass(config) else dict(config))
    return write_text_atomically(path, yaml.safe_dump(values, sort_keys=False, allow_unicode=True))


__all__ = [
    "AdapterConfig",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "SlimIPLConfig",
    "SourceConfig",
    "SpecAugmentConfig",
    "TrainConfig",
    "COMMON_VOICE",
    "FLASHLIGHT_LIST",
    "HUB",
    "MASKED",
    "MODEL_SIZES",
    "PSEUDO_LABELS",
    "SECRET_KEYS",
    "SOURCE_KINDS",
    "VOXPOPULI",
    "VOXPOPULI_ASR",
    "apply_override",
    "check_model_overrides",
    "build_dataclass",
    "config_to_dict",
    "load_config",
    "mask_secrets",
    "read_yaml_mapping",
    "save_config",
]
