"""Batched inference shared by evaluation, slimIPL pseudo-labeling and pseudo-label generation.

One place turns model outputs into text (greedy CTC, docs/design.md §5/7: no LM). Every pass over collated
batches (the trainer's dev evaluation, `mlpl.evaluation.evaluate_model`, pseudo-label generation) calls
`transcribe_batch` once per batch and keeps only what is its own (metrics, rows, LM decoding); the router
(mlpl.routing), which needs only the LID, calls the two steps it needs (`forward_batch`,
`predict_languages`):

    transcribe_batch(model, batch, tokenizer, chunk_frames, ..., language)      -> BatchTranscription
      = greedy_batch (also slimIPL's labels in the trainer, which need only the token ids):
          forward_batch: features to the model's device and dtype, chunked_logits
                         (logits, output_lengths, lid_logits), logits in float32
          + constrain_to_language (docs/design.md §3.1), when `language` is given
          + token_ids = greedy_token_ids(logits, output_lengths, blank_id)  # collapsed, blanks removed
      + texts = decode_token_ids(token_ids, tokenizer)                  # "|" -> " "
      + language_ids, language_probabilities = predict_languages(lid_logits)
      + confidences = sequence_confidence(logits, output_lengths)
    labels = pad_labels(token_ids)                                      # training targets, -100 padded

`chunked_logits` is the mling_pl cropping warm-up (docs/design.md §5): each utterance is cut into crops of
`chunk_frames` feature frames (10 s = 1000 frames), every crop runs through the model as its own
utterance, and the crops' logits are concatenated back. Crops start on multiples of the conv stride, so
the stitched sequence has exactly the uncropped length ceil(T / 3) and lines up with the whole
utterance's frames: a pseudo-label made from crops trains the whole utterance. The model's input layer
norm normalises each crop over its own valid frames, as a crop of raw audio would be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypedDict

import torch
import torch.nn.functional as F

from modeling_mlpl import constrain_to_language

FRAMES_PER_SECOND = 100  # 10 ms feature stride (docs/design.md §1)
# The longest utterance run whole when no crop length is asked for (the data's clips are 1-30 s). Longer
# ones are cropped to this length and stitched, a few crops per forward pass: self-attention memory grows
# with the square of the length, and a 10-minute clip run whole asks for a 12.8 GB tensor.
MAX_WHOLE_FRAMES = 60 * FRAMES_PER_SECOND
AUTO_CHUNKS_PER_FORWARD = 4


def chunked_logits(
    model,
    input_features: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    chunk_frames: int | None = None,
    max_chunks_per_forward: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """CTC logits of a batch, optionally computed crop by crop and stitched.

    Args:
        model: an `MlplForCTC` (any mode; callers choose eval/train and grad context).
        input_features: `(B, T, F)` features from `MlplFeatureExtractor`.
        attention_mask: `(B, T)`, 1 on valid frames (None: all valid).
        chunk_frames: crop length in feature frames, rounded down to a multiple of the conv stride;
            None (or >= every length) runs the whole utterances, identical to `model(...)`, up to
            MAX_WHOLE_FRAMES (60 s); a batch with a longer utterance is cropped to that length.
        max_chunks_per_forward: run the crops in groups of at most this many (bounds memory for long
            audio); None runs them all at once.

    Returns:
        `logits` `(B, ceil(T / stride), V)` (padded frames carry a certain blank, as the model's own
        output), `output_lengths` `(B,)`, and `lid_logits` `(B, L)` or None. With cropping, an
        utterance's LID logits are the average of its crops' LID logits weighted by their lengths.
    """
    batch_size, num_frames, _ = input_features.shape
    if attention_mask is None:
        attention_mask = torch.ones(batch_size, num_frames, dtype=torch.long, device=input_features.device)
    feature_lengths = attention_mask.sum(-1)
    output_lengths = model.get_output_lengths(feature_lengths)
    stride = model.config.conv_stride
    if chunk_frames is None and int(feature_lengths.max()) > MAX_WHOLE_FRAMES:
        chunk_frames, max_chunks_per_forward = MAX_WHOLE_FRAMES, max_chunks_per_forward or AUTO_CHUNKS_PER_FORWARD
    if chunk_frames is not None:
        if chunk_frames < stride:
            raise ValueError(f"chunk_frames={chunk_frames} must be at least the conv stride ({stride})")
        chunk_frames = (int(chunk_frames) // stride) * stride
    if chunk_frames is None or int(feature_lengths.max()) <= chunk_frames:
        outputs = model(input_features, attention_mask=attention_mask)
        return outputs.logits, output_lengths, outputs.lid_logits

    # Cut every utterance into crops [start, start + chunk_frames) of its valid frames.
    crops = []  # (utterance index, start frame, crop length)
    for index, length in enumerate(feature_lengths.tolist()):
        for start in range(0, max(length, 1), chunk_frames):
            crops.append((index, start, min(chunk_frames, length - start)))
    crop_features = input_features.new_zeros(len(crops), chunk_frames, input_features.shape[-1])
    crop_mask = attention_mask.new_zeros(len(crops), chunk_frames)
    for row, (index, start, length) in enumerate(crops):
        crop_features[row, :length] = input_features[index, start : start + length]
        crop_mask[row, :length] = 1

    group = max_chunks_per_forward or len(crops)
    crop_logits, crop_lid = [], []
    for first in range(0, len(crops), group):
        outputs = model(crop_features[first : first + group], attention_mask=crop_mask[first : first + group])
        crop_logits.append(outputs.logits)
        if outputs.lid_logits is not None:
            crop_lid.append(outputs.lid_logits)
    crop_logits = torch.cat(crop_logits)
    crop_lid = torch.cat(crop_lid) if crop_lid else None

    # Stitch: crop c of an utterance fills its output frames [start / stride, ...) exactly.
    total_frames = int(model.get_output_lengths(torch.tensor(num_frames)))
    logits = _blank_logits(crop_logits, total_frames, batch_size, model.config.pad_token_id)
    lid_logits = None if crop_lid is None else crop_lid.new_zeros(batch_size, crop_lid.shape[-1])
    for row, (index, start, length) in enumerate(crops):
        out_start, out_length = start // stride, int(model.get_output_lengths(torch.tensor(length)))
        logits[index, out_start : out_start + out_length] = crop_logits[row, :out_length]
        if lid_logits is not None:
            lid_logits[index] += crop_lid[row] * (length / max(int(feature_lengths[index]), 1))
    return logits, output_lengths, lid_logits


def _blank_logits(like: torch.Tensor, num_frames: int, batch_size: int, blank_id: int) -> torch.Tensor:
    """`(B, num_frames, V)` logits that decode to nothing (blank certain), the value of padded frames."""
    logits = like.new_full((batch_size, num_frames, like.shape[-1]), torch.finfo(like.dtype).min)
    logits[..., blank_id] = 0.0
    return logits


def collapse_ctc_path(path: torch.Tensor | Sequence[int], blank_id: int) -> list[int]:
    """Token ids of a frame-level CTC path `(T,)`: repeats merged, then blanks removed.

    The one collapse rule of the package: greedy decoding and the beam search (`mlpl.decoding`) share it.
    """
    path = torch.as_tensor(path, dtype=torch.long)
    if len(path):
        keep = torch.ones(len(path), dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        path = path[keep]
    return path[path != blank_id].tolist()


def greedy_token_ids(logits: torch.Tensor, output_lengths: torch.Tensor, blank_id: int) -> list[list[int]]:
    """Best path of each utterance: argmax per frame, repeats merged, blanks removed (CTC greedy)."""
    best = logits.argmax(-1).cpu()
    return [collapse_ctc_path(path[:length], blank_id) for path, length in zip(best, output_lengths.tolist())]


def decode_token_ids(token_ids: Sequence[Sequence[int]], tokenizer) -> list[str]:
    """Text of collapsed token ids: `group_tokens=False`, since repeats were merged on the path already
    (a doubled letter separated by a blank must stay doubled); "|" becomes a space."""
    return [tokenizer.decode(ids, group_tokens=False).strip() for ids in token_ids]


def pad_labels(token_ids: Sequence[Sequence[int]], padding_value: int = -100) -> torch.Tensor:
    """`(B, max_len)` long tensor of label ids padded with -100 (what the CTC loss reads)."""
    longest = max((len(ids) for ids in token_ids), default=0)
    labels = torch.full((len(token_ids), max(longest, 1)), padding_value, dtype=torch.long)
    for row, ids in enumerate(token_ids):
        labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return labels


def sequence_confidence(logits: torch.Tensor, output_lengths: torch.Tensor) -> list[float]:
    """Mean over valid frames of the best path's log-probability per frame (<= 0; 0 = certain).

    A cheap utterance-level confidence for pseudo-label filtering (docs/design.md §10); comparable across
    utterances of different lengths because it is a per-frame mean.
    """
    best = F.log_softmax(logits.float(), dim=-1).max(-1).values
    mask = torch.arange(best.shape[1], device=best.device)[None, :] < output_lengths.to(best.device)[:, None]
    totals = (best * mask).sum(-1) / output_lengths.clamp(min=1).to(best.device)
    return totals.cpu().tolist()


class BatchTranscription(TypedDict, total=False):
    """What `transcribe_batch` returns for a batch of `B` utterances (a dict: `result["texts"]`)."""

    texts: list[str]  # greedy transcripts
    token_ids: list[list[int]]  # their collapsed token ids
    language_ids: torch.Tensor | None  # (B,) LID top-1 class, None without an LID head
    language_probabilities: torch.Tensor | None  # (B,) its softmax probability (float32), or None
    confidences: list[float]  # sequence_confidence, <= 0
    logits: torch.Tensor  # only with return_logits: (B, T', V) float32, constrained if `language` was given
    output_lengths: torch.Tensor  # only with return_logits: (B,)


@torch.no_grad()
def forward_batch(
    model, batch: Mapping, chunk_frames: int | None = None, max_chunks_per_forward: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`chunked_logits` of a collated batch (model in its current mode): its `input_features` moved to the
    model's device and dtype, its `attention_mask` (if any) to the device; the batch's other keys are not read."""
    parameter = next(model.parameters())
    features = batch["input_features"].to(parameter.device, dtype=parameter.dtype)
    mask = batch.get("attention_mask")
    mask = None if mask is None else mask.to(parameter.device)
    return chunked_logits(model, features, mask, chunk_frames, max_chunks_per_forward)


def predict_languages(lid_logits: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(language ids `(B,)`, their probabilities `(B,)`): the LID head's top-1 class by the float32 softmax;
    (None, None) without an LID head."""
    if lid_logits is None:
        return None, None
    probabilities, language_ids = lid_logits.float().softmax(-1).max(-1)
    return language_ids, probabilities


@torch.no_grad()
def greedy_batch(
    model,
    batch: Mapping,
    vocabulary: Mapping[str, int],
    chunk_frames: int | None = None,
    max_chunks_per_forward: int | None = None,
    language=None,
) -> tuple[list[list[int]], torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The greedy step that every transcriber shares (evaluation, pseudo-labeling, slimIPL's labels in training):
    `forward_batch`, the logits in float32, the language constraint when `language` is given (a code, "auto",
    or one per utterance; `modeling_mlpl.constrain_to_language`, docs/design.md §3.1), greedy CTC decoding.

    Returns (token ids per utterance, the float32 logits, output lengths, LID logits or None)."""
    logits, output_lengths, lid_logits = forward_batch(model, batch, chunk_frames, max_chunks_per_forward)
    logits = logits.float()
    if language is not None:
        logits = constrain_to_language(logits, model.config, vocabulary, language, lid_logits)
    return greedy_token_ids(logits, output_lengths, model.config.pad_token_id), logits, output_lengths, lid_logits


@torch.no_grad()
def transcribe_batch(
    model,
    batch: Mapping,
    tokenizer,
    chunk_frames: int | None = None,
    max_chunks_per_forward: int | None = None,
    language=None,
    *,
    return_logits: bool = False,
) -> BatchTranscription:
    """Greedy transcripts, LID predictions and confidences of one collated batch (model in its current mode;
    callers choose eval mode and may wrap it in `torch.inference_mode`).

    `chunk_frames` and `max_chunks_per_forward` are those of `chunked_logits`. `language` (a code, "auto", or
    one per utterance) restricts the output to that language's characters (`modeling_mlpl.constrain_to_language`,
    docs/design.md §3.1); None: unconstrained. The constraint and everything after it read the logits in
    float32. `return_logits` also returns those logits and the output lengths (on the model's device), for a
    caller that decodes them again (the LM beam search of `mlpl.evaluation`).
    """
    token_ids, logits, output_lengths, lid_logits = greedy_batch(
        model, batch, tokenizer.get_vocab(), chunk_frames, max_chunks_per_forward, language
    )
    language_ids, language_probabilities = predict_languages(lid_logits)
    result = BatchTranscription(
        texts=decode_token_ids(token_ids, tokenizer),
        token_ids=token_ids,
        language_ids=language_ids,
        language_probabilities=language_probabilities,
        confidences=sequence_confidence(logits, output_lengths),
    )
    if return_logits:
        result.update(logits=logits, output_lengths=output_lengths)
    return result


__all__ = [
    "FRAMES_PER_SECOND",
    "MAX_WHOLE_FRAMES",
    "BatchTranscription",
    "chunked_logits",
    "collapse_ctc_path",
    "greedy_token_ids",
    "decode_token_ids",
    "forward_batch",
    "greedy_batch",
    "pad_labels",
    "predict_languages",
    "sequence_confidence",
    "transcribe_batch",
]
