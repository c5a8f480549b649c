#!/usr/bin/env python
"""Evaluate a model on a labeled set: per-language CER/WER (greedy and with an n-gram LM) and language ID.

    python scripts/evaluate.py --model outputs/demo --data data/demo --split dev
    python scripts/evaluate.py --model outputs/demo --data data/demo --split dev --languages en de \\
        --lm lm/{language}.arpa --grid-search                  # tune alpha/beta on dev -> lm_decoding.json
    python scripts/evaluate.py --model outputs/demo --data data/demo --split test --languages en de \\
        --lm lm/{language}.arpa                                # test with the tuned weights

--data is any source of the data layer (training/sources.py): a Common Voice release folder (or a folder
holding one as cv/, like the demo corpus), a Flashlight list (--language), a folder of parquet files or a
Hub dataset id (--hub-config, --language). VoxPopuli folders are unlabeled and refused.

    python scripts/evaluate.py --compare eval/control eval/slimipl        # B against A on the same utterances
    python scripts/evaluate.py --routing outputs/recipe/stages/4_pseudo_labels/und data/demo/voxpopuli_mixed

Writes to --output-dir: metrics.json, report.md, predictions.jsonl, cer_per_language.png, lid_confusion.png.
--compare A B pairs two evaluation folders' predictions.jsonl by utterance and prints, per language and
for the mean over languages, both CERs, B - A and its 95 % paired bootstrap interval (training/report.py,
the function the recipe's results report uses); with --output-dir it also writes comparison.md/.json.
--routing ROUTING_DIR MANIFEST scores stage 4's LID routing of audio of unknown language against the true
languages (and transcripts) of a manifest.tsv (the demo corpus's voxpopuli_mixed/): confusion per true
language, accuracy, CER of the routed pseudo-labels (training/report.py routing_accuracy; docs/design.md §10);
with --output-dir it writes routing.md/.json.
--grid-search writes lm_decoding.json next to the model (a local model folder; else into --output-dir),
and later runs with --lm but without --alpha/--beta read it from there.

Script-constrained decoding (docs/design.md §3.1): --language-constraint auto (each utterance's LID top-1),
reference (its reference language) or a code keeps greedy and LM output to that language's characters.
A model saved before character inventories existed takes them from a labeled source's transcripts:

    python scripts/evaluate.py --model old/best --data data/demo --split dev --language-constraint auto \
        --language-characters-from data/demo          # the train split's transcripts, as the trainer does
"""

import argparse
import dataclasses
import logging
import os
from pathlib import Path

import torch

from modeling_mlpl import build_language_characters
from training.decoding import DEFAULT_ALPHAS, DEFAULT_BEAM_SETTINGS, DEFAULT_BETAS, SLIMIPL_BEAM_SETTINGS
from training.evaluation import evaluate_model
from training.pseudo_label import load_model_for_pseudo_labeling
from training.sources import load_labeled_source, source_transcripts
from training.cli import setup_logging

logger = logging.getLogger("evaluate")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (MlplForCTC + processor) or Hub id")
    parser.add_argument("--revision", help="Hub revision of --model")
    parser.add_argument("--data", help="labeled data source (see above)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two evaluation folders (B against A) instead of evaluating")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of --compare")
    parser.add_argument("--routing", nargs=2, metavar=("ROUTING_DIR", "MANIFEST"),
                        help="score a routing folder against a manifest.tsv (or the folder holding it) instead of evaluating")
    parser.add_argument("--split", default="dev", help="split to evaluate (Common Voice TSV / Hub split)")
    parser.add_argument("--languages", nargs="+", help="evaluate only these languages")
    parser.add_argument("--language", help="language of a Flashlight list, or of a Hub dataset without a language column")
    parser.add_argument("--hub-config", help="configuration of a Hub dataset")
    parser.add_argument("--output-dir", help="report folder (default: <model folder>/eval/<split>, or eval/<split>)")
    parser.add_argument("--max-batch-seconds", type=float, default=200.0, help="padded audio per batch (docs/design.md §4)")
    parser.add_argument("--max-batch-size", type=int, help="cap on utterances per batch")
    parser.add_argument("--chunk-seconds", type=float, help="run the model on crops of this length (long audio)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding audio")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--language-constraint", metavar="LANGUAGE",
                        help="script-constrained decoding: a language code, 'auto' (the LID's top-1) or 'reference'")
    parser.add_argument("--language-characters-from", metavar="DATA",
                        help="labeled source whose transcripts (--language-characters-split) give the character "
                             "inventories, for a model whose config has none")
    parser.add_argument("--language-characters-split", default="train", help="split of --language-characters-from")

    lm = parser.add_argument_group("LM decoding (docs/design.md §7)")
    lm.add_argument("--lm", nargs="+", metavar="LM",
                    help="ARPA file for all languages, LANG=PATH pairs, or a template with {language}")
    lm.add_argument("--lexicon", help="lexicon-constrained decoding: a word list / Flashlight lexicon, or 'lm' (the LM's words)")
    lm.add_argument("--alpha", type=float, help="LM weight (on log10 p, Flashlight's lmweight)")
    lm.add_argument("--beta", type=float, help="word score (Flashlight's wordscore)")
    lm.add_argument("--grid-search", action="store_true", help="choose alpha/beta on this data (use the dev split)")
    lm.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS))
    lm.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_BETAS))
    lm.add_argument("--beam-size", type=int)
    lm.add_argument("--beam-size-token", type=int)
    lm.add_argument("--beam-threshold", type=float)
    lm.add_argument("--slimipl-beam", action="store_true",
                    help=f"the slimIPL recipe's decoder settings {SLIMIPL_BEAM_SETTINGS} (slow); default {DEFAULT_BEAM_SETTINGS}")
    arguments = parser.parse_args(argv)
    if arguments.compare or arguments.routing:
        if arguments.model or arguments.data:
            parser.error("--compare and --routing read finished outputs; drop --model/--data")
        return arguments
    if not arguments.model or not arguments.data:
        parser.error("--model and --data are required (or --compare A B)")
    if arguments.grid_search and (arguments.alpha is not None or arguments.beta is not None):
        parser.error("--grid-search chooses alpha and beta; drop --alpha/--beta (or the search)")
    if (arguments.grid_search or arguments.alpha is not None or arguments.lexicon) and not arguments.lm:
        parser.error("--grid-search, --alpha and --lexicon need an LM: pass --lm (build one with scripts/build_lm.py)")
    return arguments


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    setup_logging()
    if arguments.compare:
        compare(*arguments.compare, languages=arguments.languages, output_dir=arguments.output_dir, resamples=arguments.resamples)
        return
    if arguments.routing:
        routing(*arguments.routing, output_dir=arguments.output_dir)
        return

    model, processor, model_name, revision = load_model_for_pseudo_labeling(arguments.model, arguments.revision)
    model.to(arguments.device)
    if arguments.language_characters_from:
        pairs = source_transcripts(arguments.language_characters_from, arguments.language_characters_split)
        model.config.language_characters = build_language_characters(pairs)
        logger.info(
            "character inventories from %s (%s): %s", arguments.language_characters_from, arguments.language_characters_split,
            {code: len(characters) for code, characters in model.config.language_characters.items()},
        )
    dataset = load_labeled_source(
        arguments.data, arguments.split, languages=arguments.languages, language=arguments.language,
        hub_config=arguments.hub_config,
    )
    model_folder = Path(arguments.model) if Path(arguments.model).is_dir() else None
    output_dir = Path(arguments.output_dir) if arguments.output_dir else (model_folder or Path(".")) / "eval" / arguments.split
    # lm_decoding.json lives next to the model when the model is a folder we may write to.
    lm_decoding_path = model_folder if model_folder is not None and os.access(model_folder, os.W_OK) else output_dir

    given = {name: getattr(arguments, name) for name in ("beam_size", "beam_size_token", "beam_threshold") if getattr(arguments, name) is not None}
    beam = None
    if arguments.slimipl_beam or given:
        beam = dataclasses.replace(SLIMIPL_BEAM_SETTINGS if arguments.slimipl_beam else DEFAULT_BEAM_SETTINGS, **given)

    result = evaluate_model(
        model,
        processor,
        dataset,
        output_dir=output_dir,
        max_batch_seconds=arguments.max_batch_seconds,
        max_batch_size=arguments.max_batch_size,
        chunk_seconds=arguments.chunk_seconds,
        num_workers=arguments.num_workers,
        lm=arguments.lm,
        lexicon=arguments.lexicon,
        alpha=arguments.alpha,
        beta=arguments.beta,
        grid_search=arguments.grid_search,
        alphas=arguments.alphas,
        betas=arguments.betas,
        beam=beam,
        lm_decoding_path=lm_decoding_path,
        plots=not arguments.no_plots,
        description={"model": model_name, "model_revision": revision, "data": str(arguments.data), "split": arguments.split},
        language_constraint=arguments.language_constraint,
    )
    print(result.files["report.md"].read_text(encoding="utf-8"))
    print(f"files in {output_dir}: {', '.join(sorted(result.files))}")


def compare(folder_a: str, folder_b: str, *, languages=None, output_dir=None, resamples: int = 1000) -> None:
    from training.files import write_json_atomically, write_text_atomically
    from training.report import compare_predictions, comparison_markdown, comparison_to_dict, read_predictions

    result = compare_predictions(read_predictions(folder_a), read_predictions(folder_b), languages=languages, num_resamples=resamples)
    table = comparison_markdown(result, f"A ({folder_a})", f"B ({folder_b})")
    print(table)
    if output_dir:
        write_text_atomically(Path(output_dir) / "comparison.md", table + "\n")
        write_json_atomically(Path(output_dir) / "comparison.json", {"a": str(folder_a), "b": str(folder_b), "comparison": comparison_to_dict(result)})
        print(f"files in {output_dir}: comparison.md, comparison.json")


def routing(routing_dir: str, manifest: str, *, output_dir=None) -> None:
    from training.files import write_json_atomically, write_text_atomically
    from training.report import routing_accuracy, routing_markdown

    report = routing_accuracy(routing_dir, manifest)
    table = routing_markdown(report)
    print(table)
    if output_dir:
        write_text_atomically(Path(output_dir) / "routing.md", table + "\n")
        write_json_atomically(Path(output_dir) / "routing.json", {"routing": str(routing_dir), "manifest": str(manifest), **report})
        print(f"files in {output_dir}: routing.md, routing.json")


if __name__ == "__main__":
    main()
