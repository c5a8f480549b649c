"""Shared inference helpers: cropped-and-stitched logits (mling_pl cropping warm-up), greedy CTC decoding."""

import pytest
import torch

from modeling_mlpl import MlplForCTC, MlplProcessor
from tiny_models import tiny_config
from mlpl.inference import chunked_logits, decode_token_ids, greedy_token_ids, pad_labels, sequence_confidence
from test_modeling import random_batch


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MlplForCTC(tiny_config()).eval()


def test_no_cropping_is_the_plain_forward_pass(model):
    features, mask = random_batch([30, 17])
    with torch.no_grad():
        logits, lengths, lid = chunked_logits(model, features, mask, chunk_frames=None)
        same, _, _ = chunked_logits(model, features, mask, chunk_frames=60)  # longer than every utterance
        reference = model(features, attention_mask=mask)
    torch.testing.assert_close(logits, reference.logits)
    torch.testing.assert_close(same, reference.logits)
    torch.testing.assert_close(lid, reference.lid_logits)
    assert lengths.tolist() == [10, 6]


def test_crops_are_stitched_in_place_with_the_uncropped_length(model):
    lengths = [31, 14, 5]
    features, mask = random_batch(lengths, seed=1)
    with torch.no_grad():
        logits, output_lengths, _ = chunked_logits(model, features, mask, chunk_frames=13)  # rounded down to 12
        assert logits.shape[1] == 11 and output_lengths.tolist() == [11, 5, 2]
        # Utterance 0 = crops [0, 12), [12, 24), [24, 31): each crop alone through the model.
        for start, stop in [(0, 12), (12, 24), (24, 31)]:
            alone = model(features[:1, start:stop]).logits[0]
            torch.testing.assert_close(logits[0, start // 3 : start // 3 + alone.shape[0]], alone)
        # Utterance 1 = crops [0, 12), [12, 14); utterance 2 fits in one crop and is not changed.
        torch.testing.assert_close(logits[2, :2], model(features[2:, :5]).logits[0])
        # Frames beyond an utterance decode to nothing.
        assert (logits[1, 5:].argmax(-1) == model.config.pad_token_id).all()


def test_chunk_shorter_than_the_stride_is_refused(model):
    features, mask = random_batch([10])
    with pytest.raises(ValueError, match="chunk_frames=2"):
        chunked_logits(model, features, mask, chunk_frames=2)


def test_greedy_decoding_merges_repeats_but_keeps_letters_split_by_blank():
    processor = MlplProcessor.from_transcripts(["hallo welt"])
    vocab = processor.tokenizer.get_vocab()
    blank = vocab["<pad>"]
    path = ["h", "h", "a", "l", "<pad>", "l", "l", "o", "|", "|", "w", "e", "l", "t", "<pad>"]
    logits = torch.full((1, len(path) + 2, len(vocab)), -10.0)
    for frame, symbol in enumerate(path):
        logits[0, frame, vocab[symbol]] = 10.0
    logits[0, len(path) :, vocab["x"] if "x" in vocab else vocab["h"]] = 10.0  # beyond the length: ignored
    token_ids = greedy_token_ids(logits, torch.tensor([len(path)]), blank)
    assert decode_token_ids(token_ids, processor.tokenizer) == ["hallo welt"]
    labels = pad_labels(token_ids + [[vocab["a"]]])
    assert labels.shape == (2, 10) and labels[1, 1:].eq(-100).all()
    confidence = sequence_confidence(logits, torch.tensor([len(path)]))[0]
    assert -1e-3 < confidence <= 0.0
