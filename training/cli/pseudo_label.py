"""Pseudo-label unlabeled audio with a trained model (recipe stage 4; see training/pseudo_label/).

One process, or several with accelerate (each reads a disjoint share; the folder appears when all are done):

    python scripts/pseudo_label.py --model outputs/el/slimipl --data data/demo/voxpopuli --languages el \\
        --output-dir outputs/pl/el --flashlight-list outputs/pl/el.lst
    accelerate launch --multi_gpu --num_processes 8 scripts/pseudo_label.py --model org/mlpl-el \\
        --data /data/voxpopuli/unlabelled_data --languages el --streaming --output-dir outputs/pl/el
    python scripts/pseudo_label.py --model outputs/final --data recordings/parquet --language und \\
        --language-routing lid --output-dir outputs/pl/und
    python scripts/pseudo_label.py --model outputs/recipe/stages/1_multilingual/best --data data/demo/voxpopuli_mixed \\
        --route-to el=outputs/recipe/stages/3_slimipl/el/best fi=outputs/recipe/stages/3_slimipl/fi/best \\
        --routing-threshold 0.9 --output-dir outputs/pl/und

(`mlpl-pseudo-label` is the same command; the pseudo-labeling flags are the fields of `PseudoLabelConfig`.)
--route-to makes --model the router (training/routing.py, docs/design.md §10): each clip goes by its LID top-1 to
that language's model when the top-1 probability is >= --routing-threshold, else it is dropped and counted;
--output-dir then holds routing.parquet, pseudo_labels/<language>/ (one PL set each) and summary.json.

--data is any source of the data layer, recognised as training/sources.py says: a VoxPopuli folder
(<lang>/**/*.ogg), a Flashlight list file (with --language), a folder of parquet files or a Hub dataset id
(unlabeled: any transcript column is ignored), or a Common Voice folder (--source-split, e.g. "other").
Map-style by default (durations read from the file headers first: the best batches); --streaming reads as
it goes (nothing scanned up front; for very large sources).

The output loads with `datasets.load_dataset("parquet", data_dir=OUTPUT_DIR)` or, in the data layer's
schema, `mlpl.pseudo_label.load_pseudo_label_set(OUTPUT_DIR)`. Rerunning after a crash continues
from the finished parts.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass

from ..data import DEFAULT_NUM_SHARDS
from ..pseudo_label import LANGUAGE_ROUTINGS, PseudoLabelConfig
from . import setup_logging
from .arguments import CommandLine, Flags, option

DTYPES = ("bfloat16", "float16", "float32")


@dataclass(kw_only=True)
class PseudoLabelOptions:
    model: str = option(help="model folder (MlplForCTC + processor) or Hub id")
    revision: str | None = option(None, help="Hub revision of --model (branch, tag or commit)")
    dtype: str = option("float32", choices=DTYPES, help="model weights' dtype")
    output_dir: str = option(help="the PL set's folder (must not exist, see --overwrite)")
    route_to: list[str] | None = option(None, metavar="LANGUAGE=MODEL",
                                        help="route each clip by --model's LID to the model of its language (folder or Hub id)")
    routing_threshold: float | None = option(None, help="with --route-to: the least LID top-1 probability routed (default 0.9)")
    flashlight_list: str | None = option(None, metavar="PATH", help="also write the PLs as a Flashlight list here")


@dataclass(kw_only=True)
class SourceOptions:
    data: str = option(help="unlabeled audio (see above)")
    language: str | None = option(None, help="language of a Flashlight list, or of every clip of a Hub/parquet dataset "
                                  "without a language column ('und': unknown, see --language-routing)")  # fmt: skip
    source_split: str = option("train", help="split of a Hub dataset or Common Voice TSV to read")
    hub_config: str | None = option(None, help="the Hub dataset's configuration (e.g. a language)")
    streaming: bool = option(False, help="stream the source instead of scanning it first")
    num_shards: int = option(DEFAULT_NUM_SHARDS, help="shards of a streamed local source (a multiple of the process count)")


PSEUDO_LABEL_FLAGS = {
    "languages": {"help": "read only these source languages"},
    "chunk_seconds": {"help": "crop longer audio into crops of this length and stitch the logits (0: never)"},
    "min_confidence": {"help": "drop PLs whose mean best-path log-probability per frame is lower (e.g. -0.5)"},
    "language_routing": {"choices": LANGUAGE_ROUTINGS, "help": "'lid': set unknown ('und') languages from the LID head's prediction"},
    "split": {"flag": "--output-split", "help": "split name of the output's part files"},
    "buffer_size": {"help": "streams: bucketing buffer"},
    "num_workers": {"help": "DataLoader workers"},
    "resume": {"help": "reuse the finished parts of a crashed run", "off_help": "discard the finished parts of a crashed run"},
    "overwrite": {"help": "replace --output-dir once the new set is complete"},
}


def parse_arguments(argv=None):
    """(options, source options, PseudoLabelConfig); `options.route_to` as a {language: model} dict."""
    command = CommandLine(
        __doc__, PseudoLabelOptions, Flags(SourceOptions, "source"), Flags(PseudoLabelConfig, "pseudo-labeling (PseudoLabelConfig)", PSEUDO_LABEL_FLAGS)
    )
    options, source, config = command.parse(argv).sections
    if options.routing_threshold is not None and not options.route_to:
        command.error("--routing-threshold needs --route-to LANGUAGE=MODEL ...")
    try:
        options.route_to = dict(pair.split("=", 1) for pair in options.route_to or ())
    except ValueError:
        command.error(f"--route-to takes LANGUAGE=MODEL pairs (e.g. el=outputs/el/best), got {options.route_to}")
    return options, source, dataclasses.replace(config, chunk_seconds=config.chunk_seconds or None)


def build_source(source: SourceOptions, config: PseudoLabelConfig):
    """The unlabeled source, with each clip's audio reference kept (what the PL set stores)."""
    from .. import sources

    try:
        described = sources.source_config(
            source.data, source.source_split, languages=config.languages, language=source.language,
            hub_config=source.hub_config, streaming=source.streaming, labeled=False,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return sources.load_source(described, keep_audio_reference=True, num_shards=source.num_shards)


def main(argv=None) -> None:
    import torch
    from accelerate import Accelerator

    from ..pseudo_label import export_flashlight_list, generate_pseudo_labels, load_model_for_pseudo_labeling, summary_line

    options, source, config = parse_arguments(argv)
    accelerator = Accelerator()
    setup_logging()
    logger = logging.getLogger("mlpl.pseudo_label")

    model, processor, model_name, revision = load_model_for_pseudo_labeling(options.model, options.revision, getattr(torch, options.dtype))
    logger.info("model %s (revision %s) on %s, %d process(es)", model_name, revision, accelerator.device,
                accelerator.num_processes)  # fmt: skip
    logger.info("options: %s", dataclasses.asdict(config))
    if options.route_to:
        route(options, source, model, processor, model_name, revision, config, accelerator)
        return
    try:
        summary = generate_pseudo_labels(
            model,
            processor,
            build_source(source, config),
            options.output_dir,
            config,
            accelerator=accelerator,
            model_name=model_name,
            model_revision=revision,
        )
    except FileExistsError as error:
        raise SystemExit(f"error: {error}") from None
    if accelerator.is_main_process:
        if options.flashlight_list:
            export_flashlight_list(options.output_dir, options.flashlight_list)
        print(f"pseudo-labels in {options.output_dir}: {summary_line(summary)}", file=sys.stderr)
    accelerator.end_training()


def route(options, source, router, processor, model_name, revision, config, accelerator) -> None:
    """--route-to: the router pass, then one PL set per routed language (mlpl.routing)."""
    from ..pseudo_label import export_flashlight_list
    from ..routing import DEFAULT_ROUTING_THRESHOLD, route_and_pseudo_label, routing_summary_line

    threshold = DEFAULT_ROUTING_THRESHOLD if options.routing_threshold is None else options.routing_threshold
    summary = route_and_pseudo_label(
        router, processor, build_source(source, config), options.output_dir, options.route_to, threshold=threshold,
        config=config, accelerator=accelerator, router_name=model_name, router_revision=revision,
    )  # fmt: skip
    if accelerator.is_main_process:
        sets = [entry["pseudo_labels"] for entry in summary["languages"].values()]
        if options.flashlight_list and sets:
            export_flashlight_list(sets, options.flashlight_list)
        print(f"routed pseudo-labels in {options.output_dir}: {routing_summary_line(summary)}", file=sys.stderr)
    accelerator.end_training()


__all__ = ["PseudoLabelOptions", "SourceOptions", "build_source", "main", "parse_arguments"]
