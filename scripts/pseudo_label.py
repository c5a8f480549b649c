#!/usr/bin/env python
"""Pseudo-label unlabeled audio with a trained model (recipe stage 4; see training/pseudo_label.py).

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

--route-to makes --model the router (training/routing.py, docs/design.md §10): each clip goes by its LID top-1 to
that language's model when the top-1 probability is >= --routing-threshold, else it is dropped and counted;
--output-dir then holds routing.parquet, pseudo_labels/<language>/ (one PL set each) and summary.json.

--data is any source of the data layer, recognised as training/sources.py says: a VoxPopuli folder
(<lang>/**/*.ogg), a Flashlight list file (with --language), a folder of parquet files or a Hub dataset id
(unlabeled: any transcript column is ignored), or a Common Voice folder (--source-split, e.g. "other").
Map-style by default (durations read from the file headers first: the best batches); --streaming reads as
it goes (nothing scanned up front; for very large sources).

The output loads with `datasets.load_dataset("parquet", data_dir=OUTPUT_DIR)` or, in the data layer's
schema, `training.pseudo_label.load_pseudo_label_set(OUTPUT_DIR)`. Rerunning after a crash continues
from the finished parts.
"""

import argparse
import dataclasses
import logging
import sys

import torch
from accelerate import Accelerator

from training import data as data_layer
from training import sources
from training.cli import setup_logging
from training.pseudo_label import (
    LANGUAGE_ROUTINGS,
    PseudoLabelConfig,
    export_flashlight_list,
    generate_pseudo_labels,
    load_model_for_pseudo_labeling,
    summary_line,
)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model folder (MlplForCTC + processor) or Hub id")
    parser.add_argument("--revision", help="Hub revision of --model (branch, tag or commit)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model weights' dtype")
    parser.add_argument("--output-dir", required=True, help="the PL set's folder (must not exist, see --overwrite)")

    source = parser.add_argument_group("source")
    source.add_argument("--data", required=True, help="unlabeled audio (see above)")
    source.add_argument("--language", help="language of a Flashlight list, or of every clip of a Hub/parquet dataset "
                        "without a language column ('und': unknown, see --language-routing)")  # fmt: skip
    source.add_argument("--source-split", default="train", help="split of a Hub dataset or Common Voice TSV to read")
    source.add_argument("--hub-config", help="the Hub dataset's configuration (e.g. a language)")
    source.add_argument("--streaming", action="store_true", help="stream the source instead of scanning it first")
    source.add_argument("--num-shards", type=int, default=data_layer.DEFAULT_NUM_SHARDS,
                        help="shards of a streamed local source (a multiple of the process count)")  # fmt: skip

    defaults = PseudoLabelConfig()
    options = parser.add_argument_group("pseudo-labeling")
    options.add_argument("--languages", nargs="+", help="read only these source languages")
    options.add_argument("--max-batch-seconds", type=float, default=defaults.max_batch_seconds)
    options.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    options.add_argument("--chunk-seconds", type=float, default=defaults.chunk_seconds,
                         help="crop longer audio into crops of this length and stitch the logits (0: never)")
    options.add_argument("--max-chunks-per-forward", type=int, default=defaults.max_chunks_per_forward)
    options.add_argument("--rows-per-shard", type=int, default=defaults.rows_per_shard)
    options.add_argument("--max-label-length", type=int, default=defaults.max_label_length)
    options.add_argument("--min-confidence", type=float, default=defaults.min_confidence,
                         help="drop PLs whose mean best-path log-probability per frame is lower (e.g. -0.5)")
    options.add_argument("--language-routing", choices=LANGUAGE_ROUTINGS, default=defaults.language_routing,
                         help="'lid': set unknown ('und') languages from the LID head's prediction")
    options.add_argument("--route-to", nargs="+", metavar="LANGUAGE=MODEL",
                         help="route each clip by --model's LID to the model of its language (folder or Hub id)")
    options.add_argument("--routing-threshold", type=float, default=None,
                         help="with --route-to: the least LID top-1 probability routed (default 0.9)")
    options.add_argument("--output-split", default=defaults.split, help="split name of the output's part files")
    options.add_argument("--buffer-size", type=int, default=defaults.buffer_size, help="streams: bucketing buffer")
    options.add_argument("--num-workers", type=int, default=defaults.num_workers, help="DataLoader workers")
    options.add_argument("--no-resume", action="store_true", help="discard the finished parts of a crashed run")
    options.add_argument("--overwrite", action="store_true", help="replace --output-dir once the new set is complete")
    options.add_argument("--flashlight-list", metavar="PATH", help="also write the PLs as a Flashlight list here")
    arguments = parser.parse_args(argv)
    if arguments.routing_threshold is not None and not arguments.route_to:
        parser.error("--routing-threshold needs --route-to LANGUAGE=MODEL ...")
    try:
        arguments.route_to = dict(pair.split("=", 1) for pair in arguments.route_to or ())
    except ValueError:
        parser.error(f"--route-to takes LANGUAGE=MODEL pairs (e.g. el=outputs/el/best), got {arguments.route_to}")
    return arguments


def build_source(arguments: argparse.Namespace):
    """The unlabeled source, with each clip's audio reference kept (what the PL set stores)."""
    try:
        config = sources.source_config(
            arguments.data, arguments.source_split, languages=arguments.languages, language=arguments.language,
            hub_config=arguments.hub_config, streaming=arguments.streaming, labeled=False,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(str(error)) from None
    return sources.load_source(config, keep_audio_reference=True, num_shards=arguments.num_shards)


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    accelerator = Accelerator()
    setup_logging()
    logger = logging.getLogger("mlpl.pseudo_label")

    model, processor, model_name, revision = load_model_for_pseudo_labeling(
        arguments.model, arguments.revision, DTYPES[arguments.dtype]
    )
    logger.info("model %s (revision %s) on %s, %d process(es)", model_name, revision, accelerator.device,
                accelerator.num_processes)  # fmt: skip
    config = PseudoLabelConfig(
        max_batch_seconds=arguments.max_batch_seconds,
        max_batch_size=arguments.max_batch_size,
        chunk_seconds=arguments.chunk_seconds or None,
        max_chunks_per_forward=arguments.max_chunks_per_forward,
        rows_per_shard=arguments.rows_per_shard,
        max_label_length=arguments.max_label_length,
        min_confidence=arguments.min_confidence,
        language_routing=arguments.language_routing,
        languages=arguments.languages,
        split=arguments.output_split,
        buffer_size=arguments.buffer_size,
        num_workers=arguments.num_workers,
        resume=not arguments.no_resume,
        overwrite=arguments.overwrite,
    )
    logger.info("options: %s", dataclasses.asdict(config))
    if arguments.route_to:
        route(arguments, model, processor, model_name, revision, config, accelerator)
        return
    try:
        summary = generate_pseudo_labels(
            model,
            processor,
            build_source(arguments),
            arguments.output_dir,
            config,
            accelerator=accelerator,
            model_name=model_name,
            model_revision=revision,
        )
    except FileExistsError as error:
        raise SystemExit(f"error: {error}") from None
    if accelerator.is_main_process:
        if arguments.flashlight_list:
            export_flashlight_list(arguments.output_dir, arguments.flashlight_list)
        print(f"pseudo-labels in {arguments.output_dir}: {summary_line(summary)}", file=sys.stderr)
    accelerator.end_training()


def route(arguments, router, processor, model_name, revision, config, accelerator) -> None:
    """--route-to: the router pass, then one PL set per routed language (training.routing)."""
    from training.routing import DEFAULT_ROUTING_THRESHOLD, route_and_pseudo_label, routing_summary_line

    threshold = DEFAULT_ROUTING_THRESHOLD if arguments.routing_threshold is None else arguments.routing_threshold
    summary = route_and_pseudo_label(
        router, processor, build_source(arguments), arguments.output_dir, arguments.route_to, threshold=threshold,
        config=config, accelerator=accelerator, router_name=model_name, router_revision=revision,
    )  # fmt: skip
    if accelerator.is_main_process:
        sets = [entry["pseudo_labels"] for entry in summary["languages"].values()]
        if arguments.flashlight_list and sets:
            export_flashlight_list(sets, arguments.flashlight_list)
        print(f"routed pseudo-labels in {arguments.output_dir}: {routing_summary_line(summary)}", file=sys.stderr)
    accelerator.end_training()


if __name__ == "__main__":
    main()
