"""A tiny model overfits a handful of real utterances (issue 2): the CTC loss falls far below its start and
greedy decoding reproduces the transcripts. Real clips: the demo corpus's mp3s through the data layer."""

import pytest
import torch

from modeling_mlpl import MlplForCTC, MlplProcessor
from tiny_models import tiny_config
from mlpl.collate import MlplCollator
from mlpl.loaders import load_common_voice_folder
from mlpl.inference import transcribe_batch

LANGUAGES = ["el", "ru"]  # two scripts, so the LID head has something to learn too


@pytest.fixture
def one_thread():
    """One intra-op thread for the ~200 training steps. On an idle 2-core machine a second thread saves about
    3 s (the loop takes ~4 s instead of ~7 s); but while any other process busies a core, every 2-thread op
    waits for the descheduled thread and a step takes 10-60x longer (measured 0.04 s vs 0.5-2.4 s a step: the
    test took 75-313 s instead of ~5 s), which made it the slowest test of the suite under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_overfits_four_real_utterances(tiny_demo_corpus, one_thread):
    dataset = load_common_voice_folder(tiny_demo_corpus / "cv", "train", languages=LANGUAGES)
    records = dataset.with_format(None)
    picks = []
    for language in LANGUAGES:  # the two shortest clips of each language (about 3 s each)
        rows = [i for i, row in enumerate(records) if row["language"] == language]
        picks += sorted(rows, key=lambda i: records[i]["duration"])[:2]
    examples = [dataset[i] for i in picks]
    sentences = [e["sentence"] for e in examples]
    processor = MlplProcessor.from_transcripts(sentences)
    config = tiny_config(
        vocab_size=len(processor.tokenizer), hidden_size=64, intermediate_size=128, max_relative_positions=64, languages=LANGUAGES
    )
    torch.manual_seed(0)
    model = MlplForCTC(config)
    language_to_id = {code: i for i, code in enumerate(LANGUAGES)}
    collator = MlplCollator(processor.feature_extractor, processor.tokenizer, language_to_id, on_unknown_characters="error")
    batch = collator(examples)
    inputs = {k: batch[k] for k in ("input_features", "attention_mask", "labels", "language_ids")}

    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses, decoded = [], None
    for step in range(400):
        outputs = model(**inputs)
        optimizer.zero_grad()
        outputs.loss.backward()  # CTC + LID
        optimizer.step()
        losses.append(outputs.ctc_loss.item())
        if step % 20 == 19:
            model.eval()
            decoded = transcribe_batch(model, batch, processor.tokenizer)
            model.train()
            if decoded["texts"] == sentences:
                break

    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    assert decoded["texts"] == sentences
    assert decoded["language_ids"].tolist() == [language_to_id[e["language"]] for e in examples]
