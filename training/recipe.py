"""The mling_pl recipe end to end (docs/design.md §6), as numbered stages that are each safe to re-run (STYLE: icefall).

The stages (1 multilingual supervised, 2 per-language fine-tune, 3 per-language slimIPL, 4 pseudo-labels,
5 labeled + pseudo-labels, 6 labeled fine-tune), their folders and controls are defined once in
`mlpl.stages`; this module runs them.

Every unit of work (a stage, or one language of stages 2-4) runs in its own folder under
`<output_dir>/stages/` and writes `DONE.json` last: a finished unit is skipped, a unit killed halfway
resumes from its newest checkpoint (the trainer's `--resume`) or its finished pseudo-label parts.
After each training unit the best model (by dev CER) is evaluated on the dev and test splits of its
languages; `results.json`, `results.md` and two PNG plots collect everything at the end, and the final
model (stage 6) is copied to `<output_dir>/final_model`.

Each unit's model folder gets a model card (and each pseudo-label set a dataset card) with its
lineage; with `hub.push: true` it is also uploaded (`mlpl.hub`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .files import replace_directory, write_json_atomically
from .config import ExperimentConfig, SourceConfig, build_dataclass, config_to_dict, save_config
from .sources import load_source
from .stages import CONTROL_FOLDERS, STAGE_FOLDERS, TABLE_STAGES, unit_folder_name
from .unit_pool import UnitPool, in_side_by_side_task, side_by_side

logger = logging.getLogger("mlpl.recipe")

DONE = "DONE.json"


@dataclass
class RecipeConfig:
    """The whole recipe. `common` holds ExperimentConfig values shared by the training stages
    (model, optim, spec_augment, train, data batching); `stageN` overrides them per stage, and the
    recipe fills in the data sources and `model.init_from` of every stage itself."""

    output_dir: str = "outputs/recipe"
    demo_corpus: str | None = None  # "default" | "tiny": build the demo corpus into <output_dir>/corpus, use it
    # "same" | "plenary_hall": how the demo corpus's VoxPopuli part sounds (mlpl.demo_corpus; docs/design.md §11)
    demo_corpus_voxpopuli_domain: str = "same"
    labeled: SourceConfig | None = None  # labeled data with train/dev/test splits (e.g. a Common Voice folder)
    unlabeled: SourceConfig | None = None  # unlabeled audio (e.g. a VoxPopuli folder)
    # Unlabeled audio of unknown language (e.g. a VoxPopuli-layout folder `und/`; with demo_corpus: its
    # voxpopuli_mixed/), pseudo-labeled in stage 4 only with `pseudo_labels.router` set: routed by LID to the
    # stage-3 model of its predicted language (docs/design.md §10). `und` clips of `unlabeled` are routed too.
    unlabeled_mixed: SourceConfig | None = None
    languages: list[str] | None = None  # labeled languages to use (None: all)
    pseudo_label_languages: list[str] | None = None  # languages for stages 2-4 (None: all with unlabeled audio)
    stage5_from_scratch: bool = False  # docs/design.md §6: stage 5 continues stage 1, or starts from scratch
    controls: bool = False  # also train the labeled-only control of stages 3, 5 and 6 (CONTROL_FOLDERS)
    bootstrap_resamples: int = 1000  # paired bootstrap of arm vs control (mlpl.report)
    common: dict[str, Any] = field(default_factory=dict)
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    stage3: dict[str, Any] = field(default_factory=dict)
    stage5: dict[str, Any] = field(default_factory=dict)
    stage6: dict[str, Any] = field(default_factory=dict)
    pseudo_labels: dict[str, Any] = field(default_factory=dict)  # PseudoLabelConfig fields
    evaluation_splits: list[str] = field(default_factory=lambda: ["dev", "test"])
    # Further labeled sets, by name, that every unit is also evaluated on, for the languages each holds: e.g.
    # VoxPopuli's transcribed test, {vp_test: {kind: voxpopuli_asr, path: ..., split: test}}, to measure a model
    # in the unlabeled audio's domain. With demo_corpus: the corpus's voxpopuli_asr/ dev and test as vp_dev, vp_test.
    evaluation_sets: dict[str, SourceConfig] = field(default_factory=dict)
    evaluation_max_batch_seconds: float = 200.0
    hub: dict[str, Any] = field(default_factory=dict)  # HubConfig fields (no token: use HF_TOKEN / hf auth login)
    # AdapterConfig fields (mlpl.config): with enabled: true, stages 2-3 train a LoRA adapter per language on
    # the frozen stage-1 model instead of a full copy; stage 4 labels with base + adapter (docs/design.md §6)
    adapters: dict[str, Any] = field(default_factory=dict)
    # Units that do not depend on each other (each language's stages 2-3, an arm and its control) run side by side
    # in this many worker processes, each with cores / jobs threads (mlpl.unit_pool; docs/design.md §6). For CPU
    # machines, where a small model does not keep every core busy; one process only (not under a multi-process
    # `accelerate launch`). A run's models then differ from jobs: 1 by floating-point summation order only.
    jobs: int = 1


def load_recipe_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> RecipeConfig:
    """The recipe YAML with dotted `key=value` overrides applied, checked and typed (as `config.load_config`)."""
    from .config import apply_override, read_yaml_mapping

    path = Path(path)
    values = read_yaml_mapping(path)
    for override in overrides:
        apply_override(values, override)
    config = build_dataclass(RecipeConfig, values, str(path))
    base = path.parent.resolve()
    for source in (config.labeled, config.unlabeled, config.unlabeled_mixed, *config.evaluation_sets.values()):
        if source is not None and not Path(source.path).is_absolute() and (base / source.path).exists():
            source.path = str(base / source.path)
    return config


# RecipeConfig keys added after run folders existed, with the value that leaves a run as it was: at that value
# they are left out of the run's identity, so a folder made before them is still the same run (mlpl.run_folder).
RECIPE_KEYS_ADDED_LATER = {"demo_corpus_voxpopuli_domain": "same", "evaluation_sets": {}}


def recipe_run_identity(config: RecipeConfig) -> dict:
    """What makes a recipe run the same run (`mlpl.run_folder.hold_run_folder` compares it): the config, less the
    sections and keys that are at their "did not exist yet" value (adapters off, `RECIPE_KEYS_ADDED_LATER`)."""
    from .adapters import run_identity
    from .run_folder import without_keys_added_later

    return without_keys_added_later(run_identity(config_to_dict(config)), RECIPE_KEYS_ADDED_LATER)


def parse_stages(text: str | None) -> list[int]:
    """"1-6", "1,3-4", "5" -> stage numbers; None -> all."""
    if not text:
        return list(STAGE_FOLDERS)
    stages = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            stages.update(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ValueError(f"--stages {text!r}: use numbers and ranges like 1-6 or 2,3") from None
    unknown = sorted(stages - set(STAGE_FOLDERS))
    if unknown:
        raise ValueError(f"--stages {text!r}: no stage {unknown}; the recipe has stages 1-6")
    return sorted(stages)


def merge_sections(base: dict, update: dict) -> dict:
    """`update` laid over `base`, key by key and recursively into nested sections (a recipe's `common` + `stageN`)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        merged[key] = merge_sections(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else copy.deepcopy(value)
    return merged


def labeled_only_control(experiment: ExperimentConfig, folder: str | os.PathLike) -> ExperimentConfig:
    """The matched control of a training unit that uses unlabeled audio: everything the same, without it.

    Same initialization, number of updates, learning-rate schedule, batch size, SpecAugment and seed; the
    unlabeled sources (slimIPL) and the pseudo-label sources (stage 5) are removed, so every update is a
    labeled one. slimIPL lowers dropout and layerdrop when it starts (docs/design.md §5); the control trains with the
    lowered values throughout, which matches the arm exactly when its supervised warm-up is 0 (the recipe's
    stage 3 starts from a fine-tuned model) and is logged as an approximation otherwise.
    """
    control = copy.deepcopy(experiment)
    control.data.unlabeled = []
    control.data.train = [source for source in control.data.train if source.kind != "pseudo_labels"]
    if not control.data.train:
        raise ValueError("the unit trains on pseudo-labels only; a labeled-only control has no data")
    if experiment.slimipl.enabled:
        control.slimipl = dataclasses.replace(experiment.slimipl, enabled=False)
        control.model = dataclasses.replace(experiment.model, dropout=experiment.slimipl.dropout, layerdrop=experiment.slimipl.layerdrop)
        if experiment.slimipl.supervised_warmup_updates > 0:
            logger.warning(
                "control of a slimIPL run with %d supervised warm-up updates: it trains with slimIPL's lowered dropout/layerdrop "
                "from the start, not from update %d", experiment.slimipl.supervised_warmup_updates, experiment.slimipl.supervised_warmup_updates,
            )  # fmt: skip
    control.train = dataclasses.replace(experiment.train, output_dir=str(folder))
    return control


class Recipe:
    """Runs the stages of a RecipeConfig; `run(stages, languages)` is the one entry point."""

    def __init__(self, config: RecipeConfig):
        if config.jobs < 1:
            raise ValueError(f"jobs={config.jobs} must be >= 1 (1: one unit at a time; 2 or more: units side by side)")
        for stage in TABLE_STAGES:  # a typo in any stage's settings fails now, not hours later
            build_dataclass(ExperimentConfig, merge_sections(config.common, getattr(config, f"stage{stage}")), f"common + stage{stage}")
        from .config import AdapterConfig

        self.adapters = build_dataclass(AdapterConfig, config.adapters, "adapters")
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.stages_dir = self.output_dir / "stages"
        if config.demo_corpus:
            from .demo_corpus import TRANSCRIBED_SPLITS, VOXPOPULI_ASR_FOLDER, make_demo_corpus

            corpus = self.output_dir / "corpus"
            if self.is_main():
                logger.info("demo corpus (%s) in %s: built once, 1-4 minutes on 2 cores, reused afterwards", config.demo_corpus, corpus)
                make_demo_corpus(corpus, size=config.demo_corpus, voxpopuli_domain=config.demo_corpus_voxpopuli_domain)
            self._wait()
            config.labeled = config.labeled or SourceConfig(kind="common_voice", path=str(corpus / "cv"))
            config.unlabeled = config.unlabeled or SourceConfig(kind="voxpopuli", path=str(corpus / "voxpopuli"))
            if config.pseudo_labels.get("router") is not None:  # only then: a run folder of an earlier config stays the same run
                config.unlabeled_mixed = config.unlabeled_mixed or SourceConfig(kind="voxpopuli", path=str(corpus / "voxpopuli_mixed"))
            if not config.evaluation_sets and (corpus / VOXPOPULI_ASR_FOLDER).is_dir():
                config.evaluation_sets = {
                    f"vp_{split}": SourceConfig(kind="voxpopuli_asr", path=str(corpus / VOXPOPULI_ASR_FOLDER), split=split)
                    for split in TRANSCRIBED_SPLITS.values()
                }
        if config.labeled is None:
            raise ValueError("the recipe needs `labeled:` data (or `demo_corpus: default`)")
        self.labeled_languages = config.languages or self._languages(replace(config.labeled, split="train"))
        if config.pseudo_label_languages is not None:
            self.pl_languages = list(config.pseudo_label_languages)
            from .data import require_languages  # issue 13.5: now, not in stage 3 after stage 2 has trained

            require_languages(self.pl_languages, self._languages(config.unlabeled) if config.unlabeled else [], "pseudo_label_languages", "the unlabeled data")
        elif config.unlabeled is not None:
            self.pl_languages = [code for code in self._languages(config.unlabeled) if code in self.labeled_languages]
        else:
            self.pl_languages = []
        overlap = sorted(set(config.evaluation_sets) & set(config.evaluation_splits))
        if overlap:
            raise ValueError(f"evaluation_sets {overlap}: these names are already evaluation_splits of the labeled data; name the sets otherwise")
        # Each extra evaluation set with the languages it holds (read from its metadata, no audio).
        self.evaluation_set_languages = {name: self._languages(source) for name, source in config.evaluation_sets.items()}
        from .hub import HubConfig

        self.hub = HubConfig(**config.hub)
        self.results: dict = self.read_json(self.output_dir / "results.json") or {}
        self._pool: UnitPool | None = None  # set by run() with jobs > 1
        self._results_lock = threading.Lock()

    # ---- processes ----------------------------------------------------------------------------------
    @staticmethod
    def _state():
        from .cli import process_state

        return process_state()

    def is_main(self) -> bool:
        return self._state().is_main_process

    def _wait(self) -> None:
        self._state().wait_for_everyone()

    @staticmethod
    def _languages(source: SourceConfig) -> list[str]:
        """The languages a source holds (`mlpl.sources.source_languages`: from metadata where it can)."""
        from .sources import source_languages

        return source_languages(source)

    @staticmethod
    def read_json(path: Path):
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def _write_json(self, path: Path, value) -> None:
        if self.is_main():
            write_json_atomically(path, value)

    # ---- one unit of work: skip if done, else run and mark -------------------------------------------
    def unit(self, folder: Path, description: str, work) -> dict:
        marker = folder / DONE
        done = self.read_json(marker)
        if done is not None:
            logger.info("%s: already done (%s), skipped", description, marker)
            return done
        with self._slot():
            logger.info("%s: running in %s", description, folder)
            started = time.time()
            result = work(folder)
            result = {**result, "description": description, "seconds": round(time.time() - started, 1)}
        self._write_json(marker, result)  # written last: the unit is finished
        self._wait()
        return result

    # ---- units side by side (jobs > 1; mlpl.unit_pool) -------------------------------------------------------
    @contextmanager
    def units_side_by_side(self):
        """With jobs > 1, a pool of `jobs` workers of cores / jobs threads for the span of a run."""
        if self.config.jobs == 1:
            yield
            return
        if self._state().num_processes > 1:
            raise ValueError(
                f"jobs={self.config.jobs} runs units side by side in worker processes of this one process; under accelerate "
                f"launch with {self._state().num_processes} processes every unit already uses them all: set jobs: 1"
            )
        import torch

        threads = max(1, torch.get_num_threads() // self.config.jobs)
        with UnitPool(self.config.jobs, threads) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def side_by_side(self, tasks) -> None:
        """Run `tasks` (callables) at once inside `units_side_by_side()` with jobs > 1, else in turn (mlpl.unit_pool)."""
        side_by_side(tasks, self._pool)

    def _worker_pool(self) -> UnitPool | None:
        """The pool this thread's units go to: the run's, inside one of `side_by_side`'s tasks."""
        return self._pool if self._pool is not None and in_side_by_side_task() else None

    def _slot(self):
        """A worker slot for the span of a unit run side by side (so its time is its own), else nothing."""
        pool = self._worker_pool()
        return pool.slots if pool is not None else nullcontext()

    def _run(self, label: str, function, *args):
        """`function(*args)` in a worker (a unit run side by side) or here."""
        pool = self._worker_pool()
        return function(*args) if pool is None else pool.run(label, function, *args)

    # ---- training stages ------------------------------------------------------------------------------
    def experiment(self, stage: int, overrides: dict, *, train, dev, unlabeled=(), init_from=None, folder: Path) -> ExperimentConfig:
        values = merge_sections(self.config.common, getattr(self.config, f"stage{stage}", {}))
        values = merge_sections(values, overrides)
        values.setdefault("data", {})
        values["data"].update(
            train=[dataclasses.asdict(s) for s in train],
            dev=[dataclasses.asdict(s) for s in dev],
            unlabeled=[dataclasses.asdict(s) for s in unlabeled],
        )
        values.setdefault("model", {})["init_from"] = str(init_from) if init_from else None
        values.setdefault("train", {})["output_dir"] = str(folder)
        return build_dataclass(ExperimentConfig, values, f"stage {stage}")

    def train_unit(self, stage: int, folder: Path, experiment: ExperimentConfig, languages: list[str], lineage: dict, card: bool = True) -> dict:
        from .trainer import BEST_MODEL, FINISHED_MARKER

        if not (folder / FINISHED_MARKER).is_file():
            self._run(f"train {folder}", train_model, experiment)  # resumes from the newest step_N/ of a killed run
        model_folder = folder / BEST_MODEL
        evaluation = self._evaluate(model_folder, languages, folder / "evaluation")
        if card:  # controls are measurements, not models to publish
            self._model_card(stage, model_folder, languages, lineage, evaluation, experiment)
        summary = self.read_json(folder / FINISHED_MARKER) or {}
        return {
            "model": str(model_folder), "languages": languages, "evaluation": evaluation, "lineage": lineage,
            "evaluation_dir": str(folder / "evaluation"),
            "training": {key: summary.get(key) for key in ("num_updates", "best_dev_cer", "slimipl")},
        }  # fmt: skip

    def stage1(self) -> None:
        folder = self.stages_dir / STAGE_FOLDERS[1]
        labeled = replace(self.config.labeled, languages=self.labeled_languages)
        experiment = self.experiment(
            1, {}, train=[replace(labeled, split="train")], dev=[replace(labeled, split="dev")], folder=folder
        )
        self._record(1, None, self.unit(folder, "stage 1 (multilingual supervised)", lambda f: self.train_unit(1, f, experiment, self.labeled_languages, {"labeled": [labeled.path]})))

    def model_of(self, stage: int, language: str | None = None) -> Path:
        return self._unit_model(self.stages_dir / STAGE_FOLDERS[stage] / (language or ""), f"stage {stage}{' ' + language if language else ''}", stage)

    def _unit_model(self, folder: Path, name: str, stage: int) -> Path:
        done = self.read_json(folder / DONE)
        if done is None:
            raise RuntimeError(f"{name} has not finished ({folder / DONE} missing); run it first (--stages {stage})")
        return Path(done["model"])

    def stage2(self, languages: list[str]) -> None:
        for language in languages:
            folder = self.stages_dir / STAGE_FOLDERS[2] / language
            labeled = replace(self.config.labeled, languages=[language])
            init = self.model_of(1)
            experiment = self.experiment(
                2, self._adapter_overrides(), train=[replace(labeled, split="train")], dev=[replace(labeled, split="dev")], init_from=init, folder=folder
            )
            lineage = {"initialized_from": str(init), "parent": [1, None], "labeled": [labeled.path]}
            self._record(2, language, self.unit(folder, f"stage 2 ({language} fine-tune)", lambda f: self.train_unit(2, f, experiment, [language], lineage)))

    def stage3(self, languages: list[str]) -> None:
        for language in languages:
            folder = self.stages_dir / STAGE_FOLDERS[3] / language
            labeled = replace(self.config.labeled, languages=[language])
            unlabeled = replace(self.config.unlabeled, languages=[language])
            init = self.model_of(2, language)
            experiment = self.experiment(
                3,
                {"slimipl": {"enabled": True}, **self._adapter_overrides(base_model=self.model_of(1))},
                train=[replace(labeled, split="train")],
                dev=[replace(labeled, split="dev")],
                unlabeled=[unlabeled],
                init_from=init,
                folder=folder,
            )
            lineage = {"initialized_from": str(init), "parent": [2, language], "labeled": [labeled.path], "unlabeled": [unlabeled.path]}
            units = [lambda: self._record(3, language, self.unit(folder, f"stage 3 ({language} slimIPL)", lambda f: self.train_unit(3, f, experiment, [language], lineage)))]
            if self.config.controls:
                units.append(lambda: self._control(3, experiment, [language], lineage, language))
            self.side_by_side(units)

    def _adapter_overrides(self, base_model: Path | None = None) -> dict:
        """Stages 2-3 with `adapters.enabled`: the adapter settings (stage 3 continues stage 2's adapter on the stage-1 model)."""
        if not self.adapters.enabled:
            return {}
        return {"adapters": {**config_to_dict(self.adapters), **({"base_model": str(base_model)} if base_model else {})}}

    def _control(self, stage: int, experiment: ExperimentConfig, languages: list[str], lineage: dict, language: str | None = None) -> None:
        """The labeled-only control of a unit that trains on pseudo-labels (`labeled_only_control`)."""
        folder = self.stages_dir / CONTROL_FOLDERS[stage] / (language or "")
        control = labeled_only_control(experiment, folder)
        lineage = {key: value for key, value in lineage.items() if key not in ("unlabeled", "pseudo_labels", "pseudo_label_languages")}
        description = f"stage {stage} control ({language + ', ' if language else ''}labeled only)"
        self._record(f"{stage}c", language, self.unit(folder, description, lambda f: self.train_unit(stage, f, control, languages, lineage, card=False)))

    # ---- stage 4: pseudo-labels ----------------------------------------------------------------------------
    def stage4(self, languages: list[str]) -> None:
        from .pseudo_label import PseudoLabelConfig, generate_pseudo_labels, load_model_for_pseudo_labeling

        for language in languages:
            folder = self.stages_dir / STAGE_FOLDERS[4] / language

            def work(unit: Path, language=language) -> dict:
                from accelerate import Accelerator

                model_folder = self.model_of(3, language)
                model, processor, name, revision = load_model_for_pseudo_labeling(str(model_folder))
                source = load_source(replace(self.config.unlabeled, languages=[language]), keep_audio_reference=True)
                pl_config = build_dataclass(PseudoLabelConfig, {"overwrite": True, **self._pseudo_label_options()}, "pseudo_labels")
                output = unit / "pseudo_labels"
                summary = generate_pseudo_labels(
                    model, processor, source, output, pl_config, accelerator=Accelerator(), model_name=name, model_revision=revision
                )
                if self.is_main():
                    self._dataset_card(output, language, model_folder)
                return {"pseudo_labels": str(output), "model": str(model_folder), "summary": {k: summary.get(k) for k in ("kept", "kept_hours", "dropped", "utterances", "languages")}}

            result = self.unit(folder, f"stage 4 ({language} pseudo-labels)", work)
            self.results.setdefault("pseudo_labels", {})[language] = result.get("summary")
        self._route_unknown_languages(languages)

    def _pseudo_label_options(self) -> dict:
        """`pseudo_labels:` without the routing keys (`router`, `routing_threshold`): PseudoLabelConfig fields."""
        from .routing import RECIPE_ROUTING_KEYS

        return {key: value for key, value in self.config.pseudo_labels.items() if key not in RECIPE_ROUTING_KEYS}

    def _unknown_language_source(self):
        """The unlabeled clips of unknown language: `unlabeled_mixed`, else the `und` (or empty) part of
        `unlabeled`; None when there are none. Both: their records together (map-style only)."""
        from .pseudo_label import UNKNOWN_LANGUAGES

        parts = []
        if self.config.unlabeled_mixed is not None:
            parts.append(self.config.unlabeled_mixed)
        if self.config.unlabeled is not None:
            unknown = sorted(set(self._languages(self.config.unlabeled)) & UNKNOWN_LANGUAGES)
            if unknown:
                parts.append(replace(self.config.unlabeled, languages=unknown))
        if not parts:
            return None, []
        loaded = [load_source(part, keep_audio_reference=True) for part in parts]
        if len(loaded) == 1:
            return loaded[0], [part.path for part in parts]
        from datasets import Dataset, concatenate_datasets

        from .data import DecodeTransform, records_of, scan_skips

        if not all(isinstance(part, Dataset) for part in loaded):
            raise ValueError("unlabeled_mixed and the und clips of unlabeled: route them together only as map-style sources (streaming: false), or keep one")
        scan = scan_skips(loaded[0]).merge(scan_skips(loaded[1]))
        joined = concatenate_datasets([records_of(part) for part in loaded])
        return joined.with_transform(DecodeTransform(keep_audio_reference=True, scan=scan)), [part.path for part in parts]

    def _route_unknown_languages(self, languages: list[str]) -> None:
        """Stage 4 for audio of unknown language (docs/design.md §10): with `pseudo_labels.router` set, each
        clip goes by the router's LID to the stage-3 model of its predicted language when the top-1 probability
        is >= `pseudo_labels.routing_threshold`; the rest is dropped and counted. Unit `4_pseudo_labels/und`."""
        from .routing import DEFAULT_ROUTING_THRESHOLD, route_and_pseudo_label

        router = self.config.pseudo_labels.get("router")
        has_mixed = self.config.unlabeled_mixed is not None and Path(self.config.unlabeled_mixed.path).exists()
        if router is None:
            if has_mixed or (self.config.unlabeled is not None and {"und", ""} & set(self._languages(self.config.unlabeled))):
                logger.info("stage 4: unlabeled audio of unknown language is not pseudo-labeled; set pseudo_labels.router: stage1 to route it by LID")
            return
        folder = self.stages_dir / STAGE_FOLDERS[4] / "und"
        done = self.read_json(folder / DONE)
        threshold = float(self.config.pseudo_labels.get("routing_threshold", DEFAULT_ROUTING_THRESHOLD))
        settings = {"languages": sorted(languages), "router": str(router), "threshold": threshold}
        if done is not None and done.get("settings") != settings and self.is_main():
            logger.warning("stage 4 (und): routed with %s before, now %s; routing again", done.get("settings"), settings)
            (folder / DONE).unlink()
        self._wait()

        def work(unit: Path) -> dict:
            from accelerate import Accelerator

            from .pseudo_label import PseudoLabelConfig, load_model_for_pseudo_labeling

            source, paths = self._unknown_language_source()
            if source is None:
                raise ValueError("pseudo_labels.router is set, but there is no unlabeled audio of unknown language: set unlabeled_mixed, or give unlabeled a folder und/")
            router_folder = self.model_of(1) if router == "stage1" else router
            model, processor, name, revision = load_model_for_pseudo_labeling(str(router_folder))
            pl_config = build_dataclass(PseudoLabelConfig, {"overwrite": True, **self._pseudo_label_options()}, "pseudo_labels")
            models = {language: str(self.model_of(3, language)) for language in languages}
            summary = route_and_pseudo_label(
                model, processor, source, unit, models, threshold=threshold, config=pl_config, accelerator=Accelerator(),
                router_name=name, router_revision=revision,
            )  # fmt: skip
            keys = ("utterances", "routed", "dropped", "pseudo_label_dropped", "kept", "kept_hours", "languages", "predicted", "threshold", "router")
            return {"routing": str(unit), "sources": paths, "settings": settings, "summary": {key: summary.get(key) for key in keys}}

        result = self.unit(folder, "stage 4 (und: routed by LID)", work)
        self.results.setdefault("pseudo_labels", {})["und"] = {**(result.get("summary") or {}), "routed_by_lid": True}

    def _pseudo_label_sources(self, languages: list[str]) -> list[SourceConfig]:
        sources = []
        for language in languages:
            done = self.read_json(self.stages_dir / STAGE_FOLDERS[4] / language / DONE)
            if done is None:
                raise RuntimeError(f"stage 4 has not finished for {language}; run --stages 4 first")
            sources.append(SourceConfig(kind="pseudo_labels", path=done["pseudo_labels"], languages=[language]))
        return sources + self._routed_pseudo_label_sources(languages)

    def _routed_pseudo_label_sources(self, languages: list[str]) -> list[SourceConfig]:
        """The PL sets of the clips of unknown language routed by LID to `languages` (stage 4, und)."""
        if self.config.pseudo_labels.get("router") is None:
            return []
        done = self.read_json(self.stages_dir / STAGE_FOLDERS[4] / "und" / DONE)
        if done is None:
            raise RuntimeError("stage 4 has not routed the audio of unknown language (pseudo_labels.router is set); run --stages 4 first")
        entries = sorted(((done.get("summary") or {}).get("languages") or {}).items())
        return [SourceConfig(kind="pseudo_labels", path=entry["pseudo_labels"], languages=[code]) for code, entry in entries if code in languages and entry.get("kept")]

    # ---- stages 5 and 6 -------------------------------------------------------------------------------------
    def stage5(self, languages: list[str]) -> None:
        """Labeled data of all languages plus the pseudo-labels of `languages` (those of stages 2-4)."""
        folder = self.stages_dir / STAGE_FOLDERS[5]
        labeled = replace(self.config.labeled, languages=self.labeled_languages)
        pseudo_labels = self._pseudo_label_sources(languages)
        init = None if self.config.stage5_from_scratch else self.model_of(1)
        experiment = self.experiment(
            5, {}, train=[replace(labeled, split="train"), *pseudo_labels], dev=[replace(labeled, split="dev")], init_from=init, folder=folder
        )
        lineage = {
            "initialized_from": str(init) if init else None,
            "parent": [1, None] if init else None,
            "labeled": [labeled.path],
            "pseudo_labels": [s.path for s in pseudo_labels],
            "pseudo_label_languages": list(languages),
        }
        units = [lambda: self._record(5, None, self.unit(folder, "stage 5 (labeled + pseudo-labels)", lambda f: self.train_unit(5, f, experiment, self.labeled_languages, lineage)))]
        if self.config.controls:
            units.append(lambda: self._control(5, experiment, self.labeled_languages, lineage))
        self.side_by_side(units)

    def stage6(self) -> None:
        folder = self.stages_dir / STAGE_FOLDERS[6]
        labeled = replace(self.config.labeled, languages=self.labeled_languages)
        init = self.model_of(5)
        experiment = self.experiment(
            6, {}, train=[replace(labeled, split="train")], dev=[replace(labeled, split="dev")], init_from=init, folder=folder
        )
        lineage = {"initialized_from": str(init), "parent": [5, None], "labeled": [labeled.path]}
        units = [lambda: self._record(6, None, self.unit(folder, "stage 6 (labeled fine-tune)", lambda f: self.train_unit(6, f, experiment, self.labeled_languages, lineage)))]
        if self.config.controls:
            # stage 6's control fine-tunes stage 5's control, with stage 6's settings
            control_init = self._unit_model(self.stages_dir / CONTROL_FOLDERS[5], "stage 5 control", 5)
            control = self.experiment(
                6, {}, train=[replace(labeled, split="train")], dev=[replace(labeled, split="dev")], init_from=control_init,
                folder=self.stages_dir / CONTROL_FOLDERS[6],
            )  # fmt: skip
            units.append(lambda: self._control(6, control, self.labeled_languages, {"initialized_from": str(control_init), "labeled": [labeled.path]}))
        self.side_by_side(units)
        final = self.output_dir / "final_model"
        if self.is_main():
            temporary = final.with_name(final.name + ".tmp")
            shutil.rmtree(temporary, ignore_errors=True)
            shutil.copytree(self.model_of(6), temporary)
            replace_directory(temporary, final)
            logger.info("final model: %s", final)
        self._wait()

    # ---- evaluation, cards, results ---------------------------------------------------------------------------
    def _evaluate(self, model_folder: Path, languages: list[str], output_dir: Path, language_constraint: str | None = None) -> dict:
        """Greedy CER/WER per language on each evaluation split (main process; the others wait);
        `language_constraint`: script-constrained decoding (docs/design.md §3.1), e.g. "auto"."""
        results = {}
        if self.is_main():
            results = self._run(
                f"evaluate {model_folder}", evaluate_on_sources, model_folder, self.evaluation_sources(languages), output_dir,
                self.config.evaluation_max_batch_seconds, language_constraint,
            )  # fmt: skip
        self._wait()
        return results

    def evaluation_sources(self, languages: list[str]) -> list[tuple[str, SourceConfig]]:
        """`(name, source)` of every set a unit of `languages` is evaluated on: the labeled data's
        `evaluation_splits`, then each of `evaluation_sets` that holds any of those languages (restricted to them)."""
        sources = [(split, replace(self.config.labeled, split=split, languages=languages)) for split in self.config.evaluation_splits]
        for name, source in self.config.evaluation_sets.items():
            held = [code for code in languages if code in self.evaluation_set_languages[name]]
            if held:
                sources.append((name, replace(source, languages=held)))
        return sources

    @property
    def evaluation_names(self) -> list[str]:
        """Every evaluation's name: the splits, then the extra sets."""
        return [*self.config.evaluation_splits, *self.config.evaluation_sets]

    def _repo_id(self, stage: int, language: str | None = None) -> str:
        """Where a unit's output is (or would be) published: the Hub naming scheme, with the namespace
        "local" when none is configured, so cards name their lineage the same way either way."""
        from .hub import repo_id_for

        hub = self.hub if self.hub.namespace else dataclasses.replace(self.hub, namespace="local")
        return repo_id_for(hub, stage, language) if stage != 4 else repo_id_for(hub, 4, variant=language)

    def _model_card(self, stage: int, model_folder: Path, languages, lineage: dict, evaluation: dict, experiment: ExperimentConfig) -> None:
        if not self.is_main():
            return
        from .adapters import is_adapter_folder, set_adapter_base_model
        from .hub import EvaluationSet, HubReference, publish_folder, write_model_card

        adapter_of = HubReference(self._repo_id(1)) if is_adapter_folder(model_folder) else None  # stages 2-3 with adapters
        language = languages[0] if stage in (2, 3) else None
        repo_id = self._repo_id(stage, language)
        split = "test" if "test" in evaluation else next(iter(evaluation), None)
        results = evaluation.get(split)
        parent = lineage.get("parent")
        initialized_from = HubReference(self._repo_id(*parent)) if parent else None
        pseudo_label_data = [HubReference(self._repo_id(4, code), repo_type="dataset") for code in lineage.get("pseudo_label_languages", [])]
        pseudo_label_data += [f"unlabeled audio: {path}" for path in lineage.get("unlabeled", [])]
        try:
            write_model_card(
                model_folder,
                repo_id=repo_id,
                stage=stage,
                language=language,
                initialized_from=initialized_from,
                labeled_data=[str(p) for p in lineage.get("labeled", [])],
                pseudo_label_data=pseudo_label_data,
                hyperparameters={k: v for k, v in config_to_dict(experiment).items() if k in ("model", "optim", "spec_augment", "slimipl") or (k == "adapters" and v["enabled"])},
                results=results,
                evaluation_set=EvaluationSet("common_voice", "Common Voice (local release)", split) if results else None,
                adapter_of=adapter_of,
            )
        except (ValueError, TypeError) as error:  # a card must never stop a finished stage
            logger.warning("model card of %s not written: %s", model_folder, error)
        if self.hub.push:
            if adapter_of is not None:  # the published adapter names its base by Hub id (stage 1 was published first)
                set_adapter_base_model(model_folder, adapter_of.repo_id)
            publish_folder(model_folder, repo_id, repo_type="model", hub_config=self.hub, commit_message=f"mlpl recipe stage {stage}")

    def _dataset_card(self, folder: Path, language: str, model_folder: Path) -> None:
        from .hub import HubReference, publish_folder, write_dataset_card

        repo_id = self._repo_id(4, language)
        model_repo = self._repo_id(3, language)
        try:
            write_dataset_card(
                folder, repo_id=repo_id, source_data=[str(self.config.unlabeled.path)], source_license="cc0-1.0",
                models={language: HubReference(model_repo)},
            )  # fmt: skip
        except (ValueError, TypeError) as error:
            logger.warning("dataset card of %s not written: %s", folder, error)
        if self.hub.push:
            publish_folder(folder, repo_id, repo_type="dataset", hub_config=self.hub, commit_message=f"mlpl pseudo-labels {language}")

    def _record(self, stage: int | str, language: str | None, result: dict) -> None:
        with self._results_lock:  # units side by side finish in any order: results.json keeps the stages' order
            stages = self.results.setdefault("stages", {})
            stages.setdefault(str(stage), {})[language or "all"] = {
                key: result.get(key) for key in ("evaluation", "model", "seconds", "evaluation_dir", "training")
            }
            self.results["stages"] = {key: dict(sorted(stages[key].items())) for key in sorted(stages, key=unit_order)}
            self._write_json(self.output_dir / "results.json", self.results)

    def evaluation_dir(self, stage_key: str, language: str | None) -> Path:
        return self.stages_dir / unit_folder_name(stage_key) / (language or "") / "evaluation"

    def _pseudo_label_table(self) -> list[str]:
        """Stage 4's PL sets as results.md shows them (`mlpl.report.pseudo_label_table`)."""
        from .report import pseudo_label_table

        summaries = self.results.get("pseudo_labels") or {}
        folders = {}
        for code, summary in summaries.items():
            summary = summary or {}
            if summary.get("routed_by_lid"):  # clips of unknown language (stage 4, und): one PL set per language they went to
                folders[code] = [Path(entry["pseudo_labels"]) for entry in (summary.get("languages") or {}).values()]
            else:
                folders[code] = [self.stages_dir / STAGE_FOLDERS[4] / code / "pseudo_labels"]
        return pseudo_label_table(summaries, folders)

    def write_report(self) -> dict[str, Path]:
        """results.json (with every arm against its control), then results.md and the plots (mlpl.report)."""
        if not self.is_main():
            return {}
        from .report import compare_with_controls, write_results

        stages = self.results.get("stages", {})
        evaluation_dirs = {key: [self.evaluation_dir(key, None if unit == "all" else unit) for unit in units] for key, units in stages.items()}
        self.results["comparisons"] = compare_with_controls(
            evaluation_dirs, self.evaluation_names, self.pl_languages, self.config.bootstrap_resamples
        )
        self._write_json(self.output_dir / "results.json", self.results)
        training_logs = {key: sorted((self.stages_dir / unit_folder_name(key)).glob("**/metrics.jsonl")) for key in stages}
        files = {"results.json": self.output_dir / "results.json"}
        files.update(write_results(
            self.output_dir, self.results, labeled_languages=self.labeled_languages, pl_languages=self.pl_languages,
            bootstrap_resamples=self.config.bootstrap_resamples, pseudo_labels=self._pseudo_label_table(), training_logs=training_logs,
        ))  # fmt: skip
        for name, path in files.items():
            logger.info("wrote %s", path)
        return files

    # ---- the entry point -------------------------------------------------------------------------------------
    def run(self, stages: list[int] | None = None, languages: list[str] | None = None) -> dict[str, Path]:
        stages = stages or list(STAGE_FOLDERS)
        per_language = [code for code in self.pl_languages if languages is None or code in languages]
        unknown = sorted(set(languages or []) - set(self.pl_languages))
        if unknown:
            raise ValueError(f"--languages {unknown}: not languages with unlabeled audio; choose among {self.pl_languages}")
        if self.is_main():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            from .run_folder import RECIPE_IGNORED_KEYS, hold_run_folder  # issue 13.4: lock; refuse another run's folder

            hold_run_folder(self.output_dir, recipe_run_identity(self.config), ignore=RECIPE_IGNORED_KEYS, what="recipe")
            save_config(self.config, self.output_dir / "recipe_config.yaml")
        logger.info("recipe in %s: stages %s; labeled languages %s; pseudo-labeling %s", self.output_dir, stages, self.labeled_languages, per_language)
        language_stages = [stage for stage in stages if stage in (2, 3)]
        with self.units_side_by_side():
            for stage in stages:
                if stage == 1:
                    self.stage1()
                elif stage in language_stages:
                    if stage == language_stages[0]:  # each language's stages 2-3 in turn, the languages side by side
                        self.side_by_side([functools.partial(self._language_stages, language_stages, code) for code in per_language])
                elif stage in (4, 5):
                    getattr(self, f"stage{stage}")(per_language)
                else:
                    getattr(self, f"stage{stage}")()
        return self.write_report()

    def _language_stages(self, stages: list[int], language: str) -> None:
        for stage in stages:
            getattr(self, f"stage{stage}")([language])


def unit_order(key: str) -> tuple[int, bool]:
    """A results.json stage key in the recipe's order: "3" before "3c" before "4"."""
    return int(key.rstrip("c")), key.endswith("c")


def train_model(experiment: ExperimentConfig) -> None:
    """Train one unit (resuming from its newest checkpoint); module-level, so that a worker process can run it."""
    from .trainer import train

    train(experiment, resume=True)


def evaluate_on_sources(
    model_folder: Path, sources: list[tuple[str, SourceConfig]], output_dir: Path, max_batch_seconds: float, language_constraint: str | None = None
) -> dict:
    """Greedy CER/WER per language of the model in `model_folder` on each `(name, source)`, written under
    `output_dir/<name>/`; module-level, so that a worker process can run it."""
    from modeling_mlpl import MlplForCTC, MlplProcessor

    from .evaluation import evaluate_model

    model = MlplForCTC.from_pretrained(model_folder)
    processor = MlplProcessor.from_pretrained(model_folder)
    results = {}
    for split, source in sources:
        result = evaluate_model(
            model, processor, load_source(source), output_dir=output_dir / split, max_batch_seconds=max_batch_seconds,
            plots=False, progress=True, description={"model": str(model_folder), "split": split}, language_constraint=language_constraint,
        )  # fmt: skip
        results[split] = result.metrics["greedy"]  # compute_asr_metrics: per-language CER/WER, LID
    return results


__all__ = [
    "DONE", "Recipe", "RecipeConfig", "evaluate_on_sources", "labeled_only_control", "load_recipe_config", "parse_stages", "train_model",
    "unit_order",
]  # fmt: skip
