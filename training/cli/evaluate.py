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
    python scripts/evaluate.py --across-runs runs/seed0 runs/seed1 runs/seed2   # the same comparisons over seeds
    python scripts/evaluate.py --routing outputs/recipe/stages/4_pseudo_labels/und data/demo/voxpopuli_mixed

(`mlpl-evaluate` is the same command; the beam-search flags are the fields of `BeamSettings`.)
Writes to --output-dir: metrics.json, report.md, predictions.jsonl, cer_per_language.png, lid_confusion.png.
--compare A B pairs two evaluation folders' predictions.jsonl by utterance and prints, per language and
for the mean over languages, both CERs, B - A and its 95 % paired bootstrap interval (training/report.py,
the function the recipe's results report uses); with --output-dir it also writes comparison.md/.json.
--across-runs RUN RUN ... reads the results.json of several recipe runs of one config with other seeds
(`common.train.seed=K`, each into its own output_dir) and gives, per comparison and language, each run's
relative change, their mean and its 95 % Student-t interval across the runs: how much of an effect survives
a rerun, which the utterance-level intervals of one run cannot say (training/report.py across_runs); with
--output-dir it writes across_runs.md/.json.
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

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..decoding import DEFAULT_ALPHAS, DEFAULT_BEAM_SETTINGS, DEFAULT_BETAS, SLIMIPL_BEAM_SETTINGS, BeamSettings
from . import setup_logging
from .arguments import CommandLine, Flags, option

logger = logging.getLogger("evaluate")


@dataclass(kw_only=True)
class EvaluateOptions:
    model: str | None = option(None, help="model folder (MlplForCTC + processor) or Hub id")
    revision: str | None = option(None, help="Hub revision of --model")
    data: str | None = option(None, help="labeled data source (see above)")
    compare: list[str] | None = option(None, nargs=2, metavar=("A", "B"), help="compare two evaluation folders (B against A) instead of evaluating")
    resamples: int = option(1000, help="bootstrap resamples of --compare")
    across_runs: list[str] | None = option(None, nargs="+", metavar="RUN",
                                           help="recipe runs (output folders or results.json) of one config with other seeds: each arm's "
                                                "effect against its control, mean and 95 %% interval across the runs, instead of evaluating")
    routing: list[str] | None = option(None, nargs=2, metavar=("ROUTING_DIR", "MANIFEST"),
                                       help="score a routing folder against a manifest.tsv (or the folder holding it) instead of evaluating")
    split: str = option("dev", help="split to evaluate (Common Voice TSV / Hub split)")
    languages: list[str] | None = option(None, help="evaluate only these languages")
    language: str | None = option(None, help="language of a Flashlight list, or of a Hub dataset without a language column")
    hub_config: str | None = option(None, help="configuration of a Hub dataset")
    output_dir: str | None = option(None, help="report folder (default: <model folder>/eval/<split>, or eval/<split>)")
    max_batch_seconds: float = option(200.0, help="padded audio per batch (docs/design.md §4)")
    max_batch_size: int | None = option(None, help="cap on utterances per batch")
    chunk_seconds: float | None = option(None, help="run the model on crops of this length (long audio)")
    num_workers: int = option(0, help="DataLoader workers decoding audio")
    device: str | None = option(None, help="default: cuda where available, else cpu")
    plots: bool = option(True, help="write the PNG plots", off_help="skip the PNG plots")
    language_constraint: str | None = option(None, metavar="LANGUAGE",
                                             help="script-constrained decoding: a language code, 'auto' (the LID's top-1) or 'reference'")
    language_characters_from: str | None = option(None, metavar="DATA",
                                                  help="labeled source whose transcripts (--language-characters-split) give the character "
                                                       "inventories, for a model whose config has none")
    language_characters_split: str = option("train", help="split of --language-characters-from")


@dataclass(kw_only=True)
class LmOptions:
    lm: list[str] | None = option(None, metavar="LM", help="ARPA file for all languages, LANG=PATH pairs, or a template with {language}")
    lexicon: str | None = option(None, help="lexicon-constrained decoding: a word list / Flashlight lexicon, or 'lm' (the LM's words)")
    grid_search: bool = option(False, help="choose alpha/beta on this data (use the dev split)")
    alphas: list[float] = option(default_factory=lambda: list(DEFAULT_ALPHAS))
    betas: list[float] = option(default_factory=lambda: list(DEFAULT_BETAS))
    slimipl_beam: bool = option(False, help=f"the slimIPL recipe's decoder settings {SLIMIPL_BEAM_SETTINGS} (slow); default {DEFAULT_BEAM_SETTINGS}")


# BeamSettings' flags; alpha and beta, when not given: lm_decoding.json's, else these defaults.
BEAM_FLAGS = {
    "alpha": {"help": "LM weight (on log10 p, Flashlight's lmweight); without it: lm_decoding.json's, else"},
    "beta": {"help": "word score (Flashlight's wordscore); without it: lm_decoding.json's, else"},
}
WEIGHTS = ("alpha", "beta")


def command_line() -> CommandLine:
    return CommandLine(
        __doc__, EvaluateOptions, Flags(LmOptions, "LM decoding (docs/design.md §7)"), Flags(BeamSettings, "beam search (BeamSettings)", BEAM_FLAGS)
    )


def parse_arguments(argv=None):
    """(options, LM options, the BeamSettings given or None, alpha, beta): alpha / beta None where not given."""
    command = command_line()
    parsed = command.parse(argv)
    options, lm, beam = parsed.sections
    if options.compare or options.routing or options.across_runs:
        if options.model or options.data:
            command.error("--compare, --across-runs and --routing read finished outputs; drop --model/--data")
        if options.across_runs and len(options.across_runs) < 2:
            command.error(f"--across-runs needs at least 2 runs, got {len(options.across_runs)}")
        return options, lm, None, None, None
    if not options.model or not options.data:
        command.error("--model and --data are required (or --compare A B)")
    alpha, beta = (getattr(beam, name) if name in parsed.given else None for name in WEIGHTS)
    if lm.grid_search and (alpha is not None or beta is not None):
        command.error("--grid-search chooses alpha and beta; drop --alpha/--beta (or the search)")
    if (lm.grid_search or alpha is not None or lm.lexicon) and not lm.lm:
        command.error("--grid-search, --alpha and --lexicon need an LM: pass --lm (build one with scripts/build_lm.py)")
    given = {name: getattr(beam, name) for name in parsed.given if name in BEAM_NAMES and name not in WEIGHTS}
    settings = None
    if lm.slimipl_beam or given:
        settings = dataclasses.replace(SLIMIPL_BEAM_SETTINGS if lm.slimipl_beam else DEFAULT_BEAM_SETTINGS, **given)
    return options, lm, settings, alpha, beta


BEAM_NAMES = {item.name for item in dataclasses.fields(BeamSettings)}


def main(argv=None) -> None:
    options, lm, beam, alpha, beta = parse_arguments(argv)
    setup_logging()
    if options.compare:
        compare(*options.compare, languages=options.languages, output_dir=options.output_dir, resamples=options.resamples)
        return
    if options.routing:
        routing(*options.routing, output_dir=options.output_dir)
        return
    if options.across_runs:
        compare_runs(options.across_runs, output_dir=options.output_dir)
        return

    import torch

    from modeling_mlpl import build_language_characters

    from ..evaluation import evaluate_model
    from ..pseudo_label import load_model_for_pseudo_labeling
    from ..sources import load_labeled_source, source_transcripts

    model, processor, model_name, revision = load_model_for_pseudo_labeling(options.model, options.revision)
    model.to(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if options.language_characters_from:
        pairs = source_transcripts(options.language_characters_from, options.language_characters_split)
        model.config.language_characters = build_language_characters(pairs)
        logger.info(
            "character inventories from %s (%s): %s", options.language_characters_from, options.language_characters_split,
            {code: len(characters) for code, characters in model.config.language_characters.items()},
        )
    dataset = load_labeled_source(
        options.data, options.split, languages=options.languages, language=options.language, hub_config=options.hub_config,
    )
    model_folder = Path(options.model) if Path(options.model).is_dir() else None
    output_dir = Path(options.output_dir) if options.output_dir else (model_folder or Path(".")) / "eval" / options.split
    # lm_decoding.json lives next to the model when the model is a folder we may write to.
    lm_decoding_path = model_folder if model_folder is not None and os.access(model_folder, os.W_OK) else output_dir

    result = evaluate_model(
        model,
        processor,
        dataset,
        output_dir=output_dir,
        max_batch_seconds=options.max_batch_seconds,
        max_batch_size=options.max_batch_size,
        chunk_seconds=options.chunk_seconds,
        num_workers=options.num_workers,
        lm=lm.lm,
        lexicon=lm.lexicon,
        alpha=alpha,
        beta=beta,
        grid_search=lm.grid_search,
        alphas=lm.alphas,
        betas=lm.betas,
        beam=beam,
        lm_decoding_path=lm_decoding_path,
        plots=options.plots,
        description={"model": model_name, "model_revision": revision, "data": str(options.data), "split": options.split},
        language_constraint=options.language_constraint,
    )
    print(result.files["report.md"].read_text(encoding="utf-8"))
    print(f"files in {output_dir}: {', '.join(sorted(result.files))}")


def _show(table: str, output_dir, name: str, payload: dict) -> None:
    """Print a report's Markdown table; with `output_dir`, also write it as <name>.md beside <name>.json."""
    from ..files import write_json_atomically, write_text_atomically

    print(table)
    if output_dir:
        write_text_atomically(Path(output_dir) / f"{name}.md", table + "\n")
        write_json_atomically(Path(output_dir) / f"{name}.json", payload)
        print(f"files in {output_dir}: {name}.md, {name}.json")


def compare(folder_a: str, folder_b: str, *, languages=None, output_dir=None, resamples: int = 1000) -> None:
    from ..report import compare_predictions, comparison_markdown, comparison_to_dict, read_predictions

    result = compare_predictions(read_predictions(folder_a), read_predictions(folder_b), languages=languages, num_resamples=resamples)
    table = comparison_markdown(result, f"A ({folder_a})", f"B ({folder_b})")
    _show(table, output_dir, "comparison", {"a": str(folder_a), "b": str(folder_b), "comparison": comparison_to_dict(result)})


def compare_runs(runs: list[str], *, output_dir=None) -> None:
    from ..report import across_runs, across_runs_markdown, read_run_results

    results = {run: read_run_results(run) for run in runs}
    aggregated = across_runs(results)
    _show(across_runs_markdown(aggregated, list(results)), output_dir, "across_runs", {"runs": list(results), "comparisons": aggregated})


def routing(routing_dir: str, manifest: str, *, output_dir=None) -> None:
    from ..report import routing_accuracy, routing_markdown

    report = routing_accuracy(routing_dir, manifest)
    _show(routing_markdown(report), output_dir, "routing", {"routing": str(routing_dir), "manifest": str(manifest), **report})


__all__ = ["EvaluateOptions", "LmOptions", "main", "parse_arguments"]
