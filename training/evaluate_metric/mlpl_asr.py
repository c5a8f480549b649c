"""mlpl_asr: the project's ASR metric as an `evaluate` module (corpus-level CER/WER per language).

A thin wrapper: every number comes from `mlpl.metrics.compute_asr_metrics`, so the trainer,
`scripts/evaluate.py` and `evaluate.load(...)` agree. Load it offline from the file path:

    HF_HUB_OFFLINE=1 HF_EVALUATE_OFFLINE=1
    evaluate.load("<repo>/training/evaluate_metric/mlpl_asr.py")

(the folder path does not work: evaluate 0.4 looks for `<folder>/<folder name>.py`, here
`evaluate_metric/evaluate_metric.py`). `evaluate.load` copies this file into its module cache,
so `training` must be importable from there, i.e. the project installed (`pip install -e .`).
"""

import datasets
import evaluate

try:
    # Indented on purpose: evaluate scans top-level imports and would tell the user to
    # `pip install training` (an unrelated PyPI package) if this one failed.
    from mlpl.metrics import compute_asr_metrics
except ImportError as error:
    raise ImportError(
        "The mlpl_asr metric delegates to `mlpl.metrics` of the mlpl project, which is not "
        f"importable here ({error}). evaluate.load copies this file into its module cache, so the "
        "project must be installed: run `pip install -e <path to the mlpl repository>` in this "
        "environment (not `pip install training`, an unrelated package)."
    ) from error


_CITATION = """\
@inproceedings{lugosch2022pseudo,
  title={Pseudo-Labeling for Massively Multilingual Speech Recognition},
  author={Lugosch, Loren and Likhomanenko, Tatiana and Synnaeve, Gabriel and Collobert, Ronan},
  booktitle={ICASSP 2022 - 2022 IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year={2022}
}
"""

_DESCRIPTION = """\
Corpus-level character and word error rates (CER, WER) per language and their unweighted
average across languages, as reported for multilingual ASR in Lugosch et al. (2022); optionally
language-ID accuracy and a confusion matrix.

Each language's rate is its total edit distance divided by its total reference length (not the
mean of per-utterance rates). Case and punctuation count: strings are scored exactly as given.
With `normalized=True` a normalized variant (lowercase, NFC, Unicode punctuation removed,
whitespace collapsed) is reported BESIDE the raw one under `*_normalized` keys. A language whose
references are all empty has an undefined rate (None) and is left out of the average.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): decoded transcripts, one per utterance.
    references (`list` of `str`): reference transcripts.
    languages (`list` of `str`): reference language code of each utterance.
    predicted_languages (`list` of `str`): only with config_name="with_lid": the language the
        model's LID head predicts for each utterance.
    normalized (`bool`, default False): also report the normalized variant beside the raw one.
    lid_labels (`list` of `str`, optional): row/column order of the LID confusion matrix
        (default: sorted language codes).

Returns:
    cer (`float` or None): unweighted average over languages of the corpus-level CER.
    wer (`float` or None): the same for WER.
    cer_normalized, wer_normalized (`float` or None): only with normalized=True.
    per_language (`dict`): {language: {num_utterances, cer, wer, char_errors, char_count,
        word_errors, word_count[, the same with the suffix _normalized]}}.
    languages (`list` of `str`): the languages of the table, sorted.
    lid_accuracy (`float`), lid_accuracy_per_language (`dict`), lid_confusion_matrix (`list` of
        rows: reference language, columns: predicted), lid_labels (`list`): only with
        config_name="with_lid".

Examples:
    >>> mlpl_asr = evaluate.load("training/evaluate_metric/mlpl_asr.py")
    >>> result = mlpl_asr.compute(
    ...     predictions=["hello word", "bonjour"],
    ...     references=["hello world", "Bonjour !"],
    ...     languages=["en", "fr"],
    ...     normalized=True,
    ... )
    >>> round(result["cer"], 4), result["wer"]  # en: 1/11 chars, 1/2 words; fr: 3/9, 2/2
    (0.2121, 0.75)
    >>> round(result["cer_normalized"], 4), result["wer_normalized"]  # fr now matches exactly
    (0.0455, 0.25)

    >>> mlpl_asr_lid = evaluate.load("training/evaluate_metric/mlpl_asr.py", "with_lid")
    >>> result = mlpl_asr_lid.compute(
    ...     predictions=["a", "b"], references=["a", "b"],
    ...     languages=["en", "fr"], predicted_languages=["en", "en"],
    ...     lid_labels=["en", "fr"],
    ... )
    >>> result["lid_accuracy"], result["lid_confusion_matrix"]
    (0.5, [[1, 0], [1, 0]])
"""

# config_name -> extra input columns. "with_lid" makes predicted_languages a real input, so it
# is accumulated by add_batch like the others (evaluate's inputs are fixed per config).
_CONFIG_EXTRA_INPUTS = {"default": (), "with_lid": ("predicted_languages",)}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MlplAsr(evaluate.Metric):
    """Corpus-level CER/WER per language and their average (+ LID with config "with_lid")."""

    def _info(self):
        if self.config_name not in _CONFIG_EXTRA_INPUTS:
            raise ValueError(
                f"mlpl_asr has no config {self.config_name!r}; use one of {sorted(_CONFIG_EXTRA_INPUTS)}"
            )
        inputs = ("predictions", "references", "languages", *_CONFIG_EXTRA_INPUTS[self.config_name])
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({name: datasets.Value("string") for name in inputs}),
            reference_urls=["https://arxiv.org/abs/2111.00161"],
        )

    def _compute(self, predictions, references, languages, predicted_languages=None, normalized=False, lid_labels=None):
        return compute_asr_metrics(
            predictions,
            references,
            languages,
            normalized=normalized,
            predicted_languages=predicted_languages,
            lid_labels=lid_labels,
        )


__all__ = ["MlplAsr"]
