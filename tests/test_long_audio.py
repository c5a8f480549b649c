"""Over-long audio at inference (issue 13.6): without a crop length asked for, an utterance over 60 s is
cropped and stitched automatically, a few crops per forward pass, never run whole (a 10-minute clip run
whole asks for a 12.8 GB tensor). Up to 60 s nothing changes."""

import pytest
import torch

from modeling_mlpl import MlplForCTC
from test_modeling import random_batch
from tiny_models import tiny_config
from mlpl.inference import MAX_WHOLE_FRAMES, chunked_logits


def test_an_utterance_over_the_limit_is_cropped_and_stitched_without_being_asked():
    torch.manual_seed(0)
    model = MlplForCTC(tiny_config()).eval()
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(tuple(args[0].shape[:2])), with_kwargs=True)
    lengths = [MAX_WHOLE_FRAMES * 2 + 500, 300]  # 2 min 5 s and 3 s
    features, mask = random_batch(lengths)
    with torch.no_grad():
        logits, output_lengths, _ = chunked_logits(model, features, mask)
        asked = seen.copy()
        reference, _, _ = chunked_logits(model, features, mask, chunk_frames=MAX_WHOLE_FRAMES)
    assert max(frames for _, frames in asked) <= MAX_WHOLE_FRAMES, asked  # never the whole 2 min
    assert max(crops for crops, _ in asked) <= 4  # a few crops per forward pass
    torch.testing.assert_close(logits, reference)
    assert logits.shape[1] == -(-lengths[0] // 3) and output_lengths.tolist() == [-(-n // 3) for n in lengths]

    seen.clear()
    features, mask = random_batch([MAX_WHOLE_FRAMES, 40])  # at the limit: one whole forward pass, as before
    with torch.no_grad():
        chunked_logits(model, features, mask)
    assert seen == [(2, MAX_WHOLE_FRAMES)]


def test_the_pipeline_refuses_audio_too_long_for_one_forward_and_names_chunk_length_s(tmp_path):
    """Issue 13.6: the ASR pipeline without chunk_length_s ran a 10-minute clip whole (a 12.8 GB tensor);
    past MAX_UNCROPPED_SECONDS the model refuses, naming the option, and chunked decoding works."""
    import numpy as np
    from transformers import pipeline

    from modeling_mlpl import MlplForCTC, MlplProcessor
    from modeling_mlpl.modeling_mlpl import MAX_UNCROPPED_SECONDS

    processor = MlplProcessor.from_transcripts(["abc de"])
    model = MlplForCTC(tiny_config(vocab_size=len(processor.tokenizer))).eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    recognizer = pipeline("automatic-speech-recognition", model=str(tmp_path))
    audio = np.random.default_rng(0).normal(0, 0.1, int((MAX_UNCROPPED_SECONDS + 5) * 16000)).astype(np.float32)
    with pytest.raises(ValueError, match="chunk_length_s"):
        recognizer(audio)
    assert isinstance(recognizer(audio, chunk_length_s=20, stride_length_s=4)["text"], str)
