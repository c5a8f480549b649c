"""Helpers shared by the decoding and evaluation tests: a tiny model that writes real (imperfect) text, built
once per test session, and scripts/ loaded as modules."""

import functools
import importlib.util
from pathlib import Path

import torch

from modeling_mlpl import MlplForCTC, MlplProcessor
from tiny_models import tiny_config
from mlpl.collate import MlplCollator
from mlpl.loaders import load_common_voice_folder

REPOSITORY = Path(__file__).resolve().parent.parent
LANGUAGES = ("en", "de")
# Updates of the tiny model on its 4 clips: enough to write most words right, few enough to leave
# misspellings for an LM to fix (the loss falls from ~36 to ~2.5; ~10 s on 2 CPU cores).
TRAINING_STEPS = 60


def load_script(name: str):
    """scripts/<name>.py as a module (scripts/ is not a package)."""
    path = REPOSITORY / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def partly_trained_model(corpus_dir: Path):
    """(model in eval mode, processor, its 4 training examples, their collated batch): a tiny CTC + LID model
    trained for `TRAINING_STEPS` updates on the two shortest English and German clips of the demo corpus.

    The vocabulary is built over the language's train and dev transcripts, so dev clips can be scored too.
    """
    dataset = load_common_voice_folder(corpus_dir / "cv", "train", languages=list(LANGUAGES))
    rows = dataset.with_format(None)
    picks = []
    for language in LANGUAGES:
        indices = [index for index, row in enumerate(rows) if row["language"] == language]
        picks += sorted(indices, key=lambda index: rows[index]["duration"])[:2]
    examples = [dataset[index] for index in picks]
    dev = load_common_voice_folder(corpus_dir / "cv", "dev", languages=list(LANGUAGES)).with_format(None)
    processor = MlplProcessor.from_transcripts([row["sentence"] for row in rows] + [row["sentence"] for row in dev])
    config = tiny_config(
        vocab_size=len(processor.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        max_relative_positions=64,
        languages=list(LANGUAGES),
    )
    torch.manual_seed(0)
    model = MlplForCTC(config)
    collator = MlplCollator(processor.feature_extractor, processor.tokenizer, {code: i for i, code in enumerate(LANGUAGES)})
    batch = collator(examples)
    inputs = {key: batch[key] for key in ("input_features", "attention_mask", "labels", "language_ids")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(TRAINING_STEPS):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), processor, examples, batch
