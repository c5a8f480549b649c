# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""The mlpl joint CTC + language-ID transformer encoder (docs/design.md §2).

Flashlight's network for "Pseudo-Labeling for Massively Multilingual Speech Recognition":

    features (B, T, 80)
      -> LayerNorm over each utterance's whole (T, 80) plane, one scalar weight and bias
      -> Conv1d(80 -> 2H, kernel 7, stride 3) -> GLU -> dropout            (B, ceil(T / 3), H)
      -> N post-LN blocks: h = LN1(x + f * Attn(x)); y = LN2(h + f * MLP(h))
         (no linear biases, scalar-affine LayerNorms, Shaw keys-only relative positions,
          f = 0 with probability `layerdrop` in training)
      -> CTC head Linear(H, vocab)  and  LID head Linear(H, languages) averaged over valid frames.

Where we deliberately differ from Flashlight ("ours" in docs/design.md §2) it is to make a padded batch give
exactly the per-utterance result: the input LayerNorm and the LID average ignore padded frames,
attention masks padded keys, and the front end always pads kernel // 2 frames on both sides
(Flashlight's "SAME" padding depends on T mod 3; M-CTC-T pads like us).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import PreTrainedModel

from .configuration_mlpl import MlplConfig


def compute_output_lengths(feature_lengths, conv_stride=3):
    """Encoder frames for `feature_lengths` feature frames: ceil(T / stride).

    With an odd kernel k padded by k // 2 on both sides, the convolution yields
    floor((T + (k - 1) - k) / s) + 1 = floor((T - 1) / s) + 1 = ceil(T / s) frames.
    """
    if isinstance(feature_lengths, torch.Tensor):
        return torch.div(feature_lengths + conv_stride - 1, conv_stride, rounding_mode="floor")
    return (int(feature_lengths) + conv_stride - 1) // conv_stride


# Longest input one forward takes whole (10 ms feature frames): attention costs memory quadratic in length
# (a 10-minute clip would need a multi-GB attention bias per layer). Longer audio goes in crops: the ASR
# pipeline's `chunk_length_s`, or `mlpl.inference.chunked_logits` (evaluation and pseudo-labeling
# crop anything over 60 s by themselves).
MAX_UNCROPPED_SECONDS = 120
QUERY_BLOCK_ROWS = 128  # query rows per block of RelativePositionAttention's backward
# query rows per product of the relative term: rows start .. start + b - 1 need length + b - 1 distances, so
# small blocks multiply little more than the length distances per row (6 % more at T = 500)
RELATIVE_BLOCK_ROWS = 32
# Up to this many attention scores per layer (B * heads * T^2), the CPU attends over the whole bias with plain
# matmuls and softmax: for short batches that is faster than the blocked path, whose fused CPU kernel and
# per-block steps cost more than they save (demo model, T = 134, bf16: 5.8 against 13.1 ms per layer,
# forward + backward); the (B, heads, T, T) tensors it keeps for backward are a few MB at this size.
# benchmarks/bench_encoder.py measures both.
WHOLE_BIAS_MAX_SCORES = 1 << 20


def _block_distances(start, rows, length, max_relative_positions):
    """Query rows `start .. start + rows - 1` against `length` keys need the distances d = j - i in
    `[lowest, length - 1 - start]` with `lowest = -(start + rows - 1)` (`length + rows - 1` of them); the table
    holds `[first, last]` of them (|d| <= P - 1). Returns `(lowest, first, last)`."""
    lowest = -(start + rows - 1)
    return lowest, max(lowest, 1 - max_relative_positions), min(length - 1 - start, max_relative_positions - 1)


def _table_rows(relative_embeddings, first, last, max_relative_positions, dtype):
    """Rows of the `(2P - 1, head_dim)` table for distances `first .. last`."""
    center = max_relative_positions - 1
    return relative_embeddings[center + first : center + last + 1].to(dtype)


def _relative_scores_block(query_block, relative_embeddings, start, length, max_relative_positions):
    """Relative-position term of query rows `start .. start + b - 1` against all `length` keys, `(..., b, length)`.

    Only the distances these rows need that the table holds are multiplied (`_block_distances`); the others
    stay 0 in a zero-padded `(b, length + b - 1)` distance layout (Flashlight pads with zeros beyond the
    table; it does not clip to the edge row). A skew then moves distances to keys without a copy: element
    (r, j) sits at column j + (b - 1) - r, i.e. at flat offset r * (width - 1) + j + (b - 1).
    """
    rows = query_block.shape[-2]
    width = length + rows - 1
    lowest, first, last = _block_distances(start, rows, length, max_relative_positions)
    products = query_block @ _table_rows(relative_embeddings, first, last, max_relative_positions, query_block.dtype).T
    return _skew(F.pad(products, (first - lowest, width - 1 - (last - lowest))), length)


def _skew(by_distance, length):
    """`(..., b, length + b - 1)` contiguous distance layout -> `(..., b, length)` key layout, a view: row r's
    key j is column j + (b - 1) - r, i.e. flat offset r * (width - 1) + j + (b - 1)."""
    rows, width = by_distance.shape[-2:]
    if rows == 1:
        return by_distance
    leading = by_distance.shape[:-2]
    flat = by_distance.reshape(*leading, rows * width)[..., rows - 1 : rows - 1 + rows * (width - 1)]
    return flat.view(*leading, rows, width - 1)[..., :length]


def relative_position_scores(query, relative_embeddings, max_relative_positions, key_padding_bias=None, block_rows=RELATIVE_BLOCK_ROWS):
    """Shaw keys-only relative-position term, `(B, heads, T, T)` (plus `key_padding_bias` when given).

    `score[b, h, i, j] = query[b, h, i] . E[P - 1 + (j - i)]` for |j - i| <= P - 1 and 0 beyond
    (Flashlight's `relativePositionEmbeddingRotate` pads with zeros; it does not clip to the edge
    row), with P = `max_relative_positions` and E of shape `(2P - 1, head_dim)`.

    Cost: per block of `block_rows` query rows, one product with the distances those rows need that the
    table holds (at most `T + block_rows - 1`, at most `2P - 1`), and a skew. Differentiable.
    """
    length = query.shape[-2]
    scores = query.new_empty(*query.shape[:-1], length)
    for start in range(0, length, block_rows):
        block = _relative_scores_block(query[..., start : start + block_rows, :], relative_embeddings, start, length, max_relative_positions)
        scores[..., start : start + block_rows, :] = block
    if key_padding_bias is not None:
        scores += key_padding_bias.to(scores.dtype)
    return scores


# Dropout keep masks on the CPU are drawn 16 bits at a time, four per 64-bit random number: torch's CPU
# `bernoulli_` draws one number per element and was ~30 % of a demo training step (docs/design.md §2.3, "Dropout on the CPU").
DROPOUT_LEVELS = 1 << 16


def dropout_keep_mask(shape, p, generator=None, device="cpu"):
    """Bool mask of `shape`, each element True (kept) with probability 1 - q, and the scale 1 / (1 - q) that keeps
    the expectation; q = round(p * 65536) / 65536 is `p` to within 8e-6. Uses `generator` (default: torch's
    global one, so `set_seed` reproduces it); the same generator state gives the same mask."""
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None, generator=generator)
    dropped = round(p * DROPOUT_LEVELS)
    keep = words.view(torch.int16)[:count].view(shape) >= dropped - DROPOUT_LEVELS // 2
    return keep, DROPOUT_LEVELS / (DROPOUT_LEVELS - dropped)


def dropout(hidden_states, p, training):
    """`F.dropout`, with `dropout_keep_mask`'s cheap masks on the CPU (autograd keeps the bool mask); other
    devices and torch.compile use `F.dropout` itself."""
    if not training or p == 0.0:
        return hidden_states
    if hidden_states.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(hidden_states, p=p, training=True)
    keep, scale = dropout_keep_mask(hidden_states.shape, p)
    return torch.where(keep, hidden_states * scale, 0.0)


def _attention_keep_masks(seed, count, length, block_rows, p):
    """The attention-dropout masks of RelativePositionAttention, one `((count, rows, length) bool, scale)` per
    query block in order, from a generator seeded with `seed`: forward and backward draw the same masks."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, length, block_rows):
        yield dropout_keep_mask((count, min(block_rows, length - start), length), p, generator)


class _Workspace:
    """One flat buffer reused by every block of a call: on the CPU a big fresh allocation is page-faulted
    on every use (glibc hands it back to the system when freed), which costs more than the arithmetic."""

    def __init__(self, like, dtype):
        self.like, self.dtype, self.buffer = like, dtype, None

    def tensor(self, *shape):
        size = math.prod(shape)
        if self.buffer is None or self.buffer.numel() < size:
            self.buffer = self.like.new_empty(size, dtype=self.dtype)
        return self.buffer[:size].view(shape)


def _relative_scores_into(out, workspace, queries, table, start, max_relative_positions, padding=None):
    """Write the relative term (plus `padding`, `(N, 1, T)`) of `(N, T, head_dim)` query rows `start ..
    start + b - 1` into `out` `(N, b, T)`: `_relative_scores_block`'s arithmetic, `RELATIVE_BLOCK_ROWS`
    rows per product, in a reused `workspace`."""
    count, length, _ = queries.shape
    for first_row in range(start, start + out.shape[1], RELATIVE_BLOCK_ROWS):
        rows = min(RELATIVE_BLOCK_ROWS, start + out.shape[1] - first_row)
        width = length + rows - 1
        lowest, first, last = _block_distances(first_row, rows, length, max_relative_positions)
        by_distance = workspace.tensor(count, rows, width)
        by_distance[..., : first - lowest].zero_()
        by_distance[..., last - lowest + 1 :].zero_()
        table_rows = _table_rows(table, first, last, max_relative_positions, queries.dtype).T.expand(count, -1, -1)
        torch.bmm(queries[:, first_row : first_row + rows], table_rows, out=by_distance[..., first - lowest : last - lowest + 1])
        target = out[:, first_row - start : first_row - start + rows]
        if padding is None:
            target.copy_(_skew(by_distance, length))
        else:
            torch.add(_skew(by_distance, length), padding, out=target)
    return out


class RelativePositionAttention(torch.autograd.Function):
    """CPU softmax attention with the Shaw relative term added to the scores; the backward recomputes.

    Forward: the relative term (`_relative_scores_into`, all heads at once, as `relative_position_scores`
    computes it) plus the key mask forms a transient bias for PyTorch's fused
    CPU flash kernel, which also returns the row log-sum-exp. With attention dropout (`dropout` > 0; the fused
    CPU kernel has none) the forward runs the same arithmetic per block of query rows itself, in float32,
    dropping probabilities with `_attention_keep_masks(seed, ...)`. Only q, k, v, the output and the
    log-sum-exp are saved, no `(B, H, T, T)` tensor. Backward: per block of query rows, the scores and the
    softmax are recomputed from the log-sum-exp (as flash attention does), the dropout masks are drawn again
    from `seed`, and they give the gradients of q, k, v and the table; every temporary is a
    `(B * H, block_rows, T)` tensor in a reused workspace.
    `query` comes scaled; `padding_bias` is the additive `(B, 1, 1, T)` key mask or None.
    """

    @staticmethod
    def forward(ctx, query, key, value, relative_embeddings, padding_bias, max_relative_positions, block_rows, dropout=0.0, seed=0):
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
        batch, heads, length, head_dim = query.shape
        if dropout > 0.0:
            output, log_sum_exp = _dropped_attention(query, key, value, relative_embeddings, padding_bias, max_relative_positions, block_rows, dropout, seed)
        else:
            queries = query.view(batch * heads, length, head_dim)
            bias = query.new_empty(batch * heads, length, length)
            padding = _padding_rows(padding_bias, heads, query.dtype)
            workspace = _Workspace(query, query.dtype)
            _relative_scores_into(bias, workspace, queries, relative_embeddings, 0, max_relative_positions, padding)
            output, log_sum_exp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, 0.0, False, attn_mask=bias.view(batch, heads, length, length), scale=1.0
            )
            del bias
        ctx.save_for_backward(query, key, value, relative_embeddings, padding_bias, output, log_sum_exp)
        ctx.max_relative_positions, ctx.block_rows, ctx.dropout, ctx.seed = max_relative_positions, block_rows, dropout, seed
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        positions, block_rows = ctx.max_relative_positions, ctx.block_rows
        # float32 (or wider) throughout: bf16 inputs are upcast once
        accumulate = torch.promote_types(saved[0].dtype, torch.float32)
        batch, heads, length, head_dim = saved[0].shape
        flat = lambda tensor: tensor.to(accumulate).reshape(batch * heads, length, -1)  # noqa: E731
        query, key, value, output, grad_output = (flat(tensor) for tensor in (*saved[:3], saved[5], grad_output))
        table, log_sum_exp = saved[3].to(accumulate), saved[6].to(accumulate).reshape(batch * heads, length)
        padding = _padding_rows(saved[4], heads, accumulate)
        center, count = positions - 1, batch * heads
        grad_query, grad_key, grad_value = torch.empty_like(query), torch.zeros_like(key), torch.zeros_like(value)
        grad_table = torch.zeros_like(table)
        row_terms = (grad_output * output).sum(-1, keepdim=True)  # D_i = dO_i . O_i, the softmax backward's row term
        relative_space, scores_space, gradient_space, table_space, kept_space = (_Workspace(query, accumulate) for _ in range(5))
        masks = _attention_keep_masks(ctx.seed, count, length, block_rows, ctx.dropout) if ctx.dropout > 0.0 else None
        for start in range(0, length, block_rows):
            stop = min(start + block_rows, length)
            rows = stop - start
            q_rows, d_rows = query[:, start:stop], grad_output[:, start:stop]
            # P = exp(relative + mask + q k^T - lse)
            probabilities = _relative_scores_into(scores_space.tensor(count, rows, length), relative_space, query, table, start, positions, padding)
            probabilities.baddbmm_(q_rows, key.transpose(1, 2)).sub_(log_sum_exp[:, start:stop, None]).exp_()
            # dS = P * (dO v^T - D), computed between b - 1 zero columns on each side: there, distance column
            # c of row r (key c + r - (b - 1)) sits at [r, c + r], a strided view for the relative term
            padded = gradient_space.tensor(count, rows, length + 2 * (rows - 1))
            padded[..., : rows - 1].zero_()
            padded[..., rows - 1 + length :].zero_()
            grad_scores = torch.bmm(d_rows, value.transpose(1, 2), out=padded[..., rows - 1 : rows - 1 + length])
            if masks is None:
                grad_value.baddbmm_(probabilities.transpose(1, 2), d_rows)
            else:  # with dropout D_i = dO_i . O_i still holds; dS = P * (keep * scale * dO v^T - D)
                kept = _kept_scaled(next(masks), kept_space, accumulate)
                grad_value.baddbmm_(torch.mul(probabilities, kept, out=relative_space.tensor(*kept.shape)).transpose(1, 2), d_rows)
                grad_scores.mul_(kept)
            grad_scores.sub_(row_terms[:, start:stop]).mul_(probabilities)
            grad_key.baddbmm_(grad_scores.transpose(1, 2), q_rows)
            grad_rows = torch.bmm(grad_scores, key, out=grad_query[:, start:stop])
            lowest, first, last = _block_distances(start, rows, length, positions)
            size, stride = (count, rows, length + rows - 1), (padded.stride(0), padded.stride(1) + 1, 1)
            by_distance = padded.as_strided(size, stride, padded.storage_offset())[..., first - lowest : last - lowest + 1]
            table_rows = _table_rows(table, first, last, positions, accumulate)
            grad_rows.baddbmm_(by_distance, table_rows.expand(count, -1, -1))
            per_head = torch.bmm(by_distance.transpose(1, 2), q_rows, out=table_space.tensor(count, last - first + 1, head_dim))
            grad_table[center + first : center + last + 1] += per_head.sum(0)
        shape = (batch, heads, length, head_dim)
        gradients = (grad_query.view(shape), grad_key.view(shape), grad_value.view(shape), grad_table)
        return (*(gradient.to(tensor.dtype) for gradient, tensor in zip(gradients, saved[:4])), None, None, None, None, None)


def _kept_scaled(mask_and_scale, workspace, dtype):
    """A dropout mask as a float tensor of 0 and the scale, in `workspace`."""
    keep, scale = mask_and_scale
    kept = workspace.tensor(*keep.shape)
    kept.copy_(keep)
    return kept.mul_(scale)


def _dropped_attention(query, key, value, table, padding_bias, max_relative_positions, block_rows, dropout, seed):
    """RelativePositionAttention's forward with attention dropout: per block of query rows, scores = relative
    term + key mask + q k^T, their log-sum-exp, probabilities dropped by `_attention_keep_masks`, times v;
    float32 (or wider) throughout. Returns the output in the query's dtype and the log-sum-exp `(B, H, T)`."""
    accumulate = torch.promote_types(query.dtype, torch.float32)
    batch, heads, length, head_dim = query.shape
    count = batch * heads
    queries, keys, values = (tensor.to(accumulate).reshape(count, length, -1) for tensor in (query, key, value))
    table, padding = table.to(accumulate), _padding_rows(padding_bias, heads, accumulate)
    output = torch.empty_like(queries)
    log_sum_exp = queries.new_empty(count, length)
    relative_space, scores_space, kept_space = (_Workspace(queries, accumulate) for _ in range(3))
    masks = _attention_keep_masks(seed, count, length, block_rows, dropout)
    for start in range(0, length, block_rows):
        stop = min(start + block_rows, length)
        scores = _relative_scores_into(scores_space.tensor(count, stop - start, length), relative_space, queries, table, start, max_relative_positions, padding)
        scores.baddbmm_(queries[:, start:stop], keys.transpose(1, 2))
        rows_lse = log_sum_exp[:, start:stop] = torch.logsumexp(scores, -1)
        probabilities = scores.sub_(rows_lse[..., None]).exp_().mul_(_kept_scaled(next(masks), kept_space, accumulate))
        torch.bmm(probabilities, values, out=output[:, start:stop])
    shape = (batch, heads, length)
    return output.view(*shape, head_dim).to(query.dtype), log_sum_exp.view(shape)


def _padding_rows(padding_bias, heads, dtype):
    """The `(B, 1, 1, T)` key mask as `(B * H, 1, T)` rows (None stays None)."""
    if padding_bias is None:
        return None
    batch, length = padding_bias.shape[0], padding_bias.shape[-1]
    return padding_bias.to(dtype).expand(batch, heads, 1, length).reshape(batch * heads, 1, length)


def _has_padding(frame_mask):
    """Whether a `(B, T)` mask has padded frames; always True under torch.compile, which then keeps one graph
    (masking a batch without padding changes nothing) instead of breaking on the data-dependent branch."""
    return torch.compiler.is_compiling() or not bool(frame_mask.all())


class MlplLayerNorm(nn.Module):
    """LayerNorm over the channel dimension with ONE scalar weight and ONE scalar bias (Flashlight
    `LayerNorm` with affine size 1, docs/design.md §2.3): 2 parameters per norm, 4 per block.

    `affine_size = hidden_size` (config `layer_norm_per_channel`) gives one weight and bias per channel
    instead, as `nn.LayerNorm`: only for converted M-CTC-T models whose LayerNorms were trained per channel.
    """

    def __init__(self, eps=1e-5, affine_size=1):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(affine_size))
        self.bias = nn.Parameter(torch.zeros(affine_size))

    def forward(self, hidden_states):
        normalized = F.layer_norm(hidden_states, hidden_states.shape[-1:], eps=self.eps)
        return normalized * self.weight + self.bias


class MlplInputLayerNorm(nn.Module):
    """LayerNorm over each utterance's whole `(T, F)` feature plane, scalar weight and bias (docs/design.md §2.1).

    Ours: the statistics use the valid frames only, and padded frames come out as exact zeros so the
    convolution sees the same zeros it would pad an unbatched utterance with.
    """

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, input_features, frame_mask):
        """input_features `(B, T, F)`, frame_mask `(B, T)` bool -> `(B, T, F)` float32."""
        features = input_features.float()
        valid = frame_mask[..., None].to(features.dtype)
        count = valid.sum(dim=(1, 2), keepdim=True) * features.shape[-1]
        mean = (features * valid).sum(dim=(1, 2), keepdim=True) / count
        variance = (((features - mean) * valid) ** 2).sum(dim=(1, 2), keepdim=True) / count
        normalized = (features - mean) * torch.rsqrt(variance + self.eps)
        return (normalized * self.weight + self.bias) * valid


class MlplConvFrontEnd(nn.Module):
    """Conv1d(num_mel_bins -> 2H, kernel 7, stride 3, bias) -> GLU over channels -> dropout (docs/design.md §2.2)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.conv = nn.Conv1d(
            config.num_mel_bins,
            2 * config.hidden_size,
            kernel_size=config.conv_kernel_size,
            stride=config.conv_stride,
            padding=config.conv_kernel_size // 2,
        )

    def forward(self, features):
        """features `(B, T, F)` -> `(B, ceil(T / stride), H)`."""
        hidden_states = self.conv(features.transpose(1, 2).to(self.conv.weight.dtype))
        hidden_states = F.glu(hidden_states, dim=1).transpose(1, 2)
        return dropout(hidden_states, self.config.dropout, self.training)


class MlplAttention(nn.Module):
    """Multi-head self-attention without biases, with a learned Shaw relative-position table (keys only).

    On the CPU the relative term, the key padding mask and attention dropout go through
    `RelativePositionAttention` (query blocks, fused CPU kernel without dropout, recomputing backward); on
    other devices, under torch.compile, or on the eager path that returns the weights, they form one
    `(B, H, T, T)` additive bias.
    """

    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        # Flashlight scales q by 1/sqrt(head_dim) BEFORE both q.k and q.E (Functions.cpp, multiheadAttention).
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        if config.max_relative_positions > 0:
            # one table per layer, shared by all heads: (2 * 920 - 1, head_dim) = (1839, 192) in the base model
            self.relative_position_embeddings = nn.Parameter(
                torch.empty(2 * config.max_relative_positions - 1, self.head_dim)
            )
        else:
            self.relative_position_embeddings = None

    def forward(self, hidden_states, key_padding_bias=None, output_attentions=False):
        """hidden_states `(B, T, H)`; key_padding_bias `(B, 1, 1, T)` additive (0 or a large negative).

        Returns the attention output `(B, T, H)` and, on the eager path, the weights `(B, heads, T, T)`.
        """
        batch_size, length, _ = hidden_states.shape
        shape = (batch_size, length, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)

        drop_rate = self.config.dropout if self.training else 0.0
        eager = output_attentions or self.config._attn_implementation == "eager"
        table = self.relative_position_embeddings
        weights = None
        on_cpu = query.device.type == "cpu" and not torch.compiler.is_compiling()
        small = batch_size * self.num_heads * length * length <= WHOLE_BIAS_MAX_SCORES
        if table is not None and not eager and on_cpu and not small:
            # the relative term in blocks of query rows, never a (B, H, T, T) tensor; dropout masks from a seed
            # of torch's global generator (set_seed reproduces them), drawn again in backward
            seed = int(torch.randint(1 << 62, (1,)).item()) if drop_rate > 0.0 else 0
            attended = RelativePositionAttention.apply(
                query * self.scaling, key, value, table, key_padding_bias, self.config.max_relative_positions,
                QUERY_BLOCK_ROWS, drop_rate, seed,
            )
        else:
            bias = key_padding_bias
            if table is not None:
                # eager weights, short CPU batches, other devices or torch.compile: the whole (B, H, T, T) bias
                bias = relative_position_scores(query * self.scaling, table, self.config.max_relative_positions, bias)
            if eager or (on_cpu and small and table is not None):
                scores = (query * self.scaling) @ key.transpose(-1, -2)
                if bias is not None:
                    scores = scores + bias
                weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
                weights = dropout(weights, drop_rate, self.training)
                attended = weights @ value
            else:
                attended = F.scaled_dot_product_attention(
                    query, key, value, attn_mask=bias, dropout_p=drop_rate, scale=self.scaling
                )
        attended = attended.transpose(1, 2).reshape(batch_size, length, -1)
        return self.out_proj(attended), (weights if output_attentions else None)


class MlplFeedForward(nn.Module):
    """w2(dropout(relu(w1 x))), no biases (Flashlight Transformer::mlp)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden_states):
        hidden_states = torch.relu(self.fc1(hidden_states))
        hidden_states = dropout(hidden_states, self.config.dropout, self.training)
        return self.fc2(hidden_states)


class MlplEncoderLayer(GradientCheckpointingLayer):
    """Post-LN block: h = LN1(x + f Attn(x)); y = LN2(h + f MLP(h)) (Flashlight Transformer::forward, preLN=false).

    With `config.pre_layer_norm`: h = x + f Attn(LN1(x)); y = h + f MLP(LN2(h)) (preLN=true).
    """

    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.pre_layer_norm = config.pre_layer_norm
        self.self_attn = MlplAttention(config, layer_idx)
        affine_size = config.hidden_size if config.layer_norm_per_channel else 1
        self.attn_layer_norm = MlplLayerNorm(config.layer_norm_eps, affine_size)
        self.feed_forward = MlplFeedForward(config)
        self.final_layer_norm = MlplLayerNorm(config.layer_norm_eps, affine_size)

    def forward(self, hidden_states, key_padding_bias=None, drop_branches=False, output_attentions=False):
        """`drop_branches`: the layerdrop draw (f = 0). Flashlight multiplies both branches by 0 and still
        applies the LayerNorms; we skip computing the branches, which gives the same output for less work."""
        if self.pre_layer_norm:
            if drop_branches:
                return hidden_states, None
            attended, weights = self.self_attn(
                self.attn_layer_norm(hidden_states), key_padding_bias, output_attentions=output_attentions
            )
            hidden_states = hidden_states + attended
            hidden_states = hidden_states + self.feed_forward(self.final_layer_norm(hidden_states))
            return hidden_states, weights
        if drop_branches:
            return self.final_layer_norm(self.attn_layer_norm(hidden_states)), None
        attended, weights = self.self_attn(hidden_states, key_padding_bias, output_attentions=output_attentions)
        hidden_states = self.attn_layer_norm(hidden_states + attended)
        hidden_states = self.final_layer_norm(hidden_states + self.feed_forward(hidden_states))
        return hidden_states, weights


AUTO_LANGUAGE = "auto"  # script constraint of each utterance from the LID head's top-1 (docs/design.md §3.1)


def constraint_languages(config, language, batch_size, lid_logits=None):
    """The language each of `batch_size` utterances is constrained to: `language` is a code, "auto" (the LID
    head's top-1 of that utterance, from `lid_logits` `(B, L)`), or a sequence of these, one per utterance."""
    per_utterance = [language] * batch_size if isinstance(language, str) else list(language)
    if len(per_utterance) != batch_size:
        raise ValueError(f"{len(per_utterance)} constraint languages for a batch of {batch_size} utterances")
    if AUTO_LANGUAGE in per_utterance:
        if lid_logits is None:
            raise ValueError(
                f"language={AUTO_LANGUAGE!r} takes each utterance's language from the LID head, but this model has none "
                "(config.num_languages = 0); name the language instead, e.g. language='el'"
            )
        codes = config.language_codes
        predicted = [codes[int(index)] for index in lid_logits.argmax(-1).tolist()]
        per_utterance = [guess if code == AUTO_LANGUAGE else code for code, guess in zip(per_utterance, predicted)]
    return per_utterance


def constrain_to_language(logits, config, vocabulary, language, lid_logits=None):
    """Script-constrained CTC logits (docs/design.md §3.1): every symbol outside the utterance's language's
    inventory (`config.language_characters`, plus the word delimiter and the blank) gets the dtype minimum on
    every frame, so greedy decoding, beam search and pseudo-labels can only emit that language's characters.

    Args:
        logits: `(B, T, V)` CTC logits.
        config: the model's `MlplConfig` (its `language_characters` and `language_codes`).
        vocabulary: the tokenizer's `get_vocab()` (characters to ids).
        language: a code, "auto" (each utterance's LID top-1 from `lid_logits`), or one of these per utterance.
        lid_logits: `(B, L)`, needed for "auto".

    Returns:
        Logits of the same shape and dtype.
    """
    languages = constraint_languages(config, language, logits.shape[0], lid_logits)
    allowed = torch.zeros(logits.shape[0], logits.shape[-1], dtype=torch.bool, device=logits.device)
    ids = {code: config.script_token_ids(code, vocabulary) for code in set(languages)}
    for row, code in enumerate(languages):
        allowed[row, [index for index in ids[code] if index < logits.shape[-1]]] = True
    return logits.masked_fill(~allowed[:, None, :], torch.finfo(logits.dtype).min)


@dataclass
class MlplModelOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch, frames, hidden_size)`):
            Output of the last block; one frame per 480 input samples (30 ms).
        output_attention_mask (`torch.LongTensor` of shape `(batch, frames)`):
            1 on valid encoder frames, 0 on padding.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Front-end output and the output of every block (`num_hidden_layers + 1` tensors).
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention weights `(batch, heads, frames, frames)` of every block.
    """

    last_hidden_state: torch.FloatTensor | None = None
    output_attention_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MlplCTCOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            `ctc_loss + lid_loss_weight * lid_loss`, over whichever of `labels` / `language_ids` were given.
        logits (`torch.FloatTensor` of shape `(batch, frames, vocab_size)`):
            CTC logits (before log-softmax); the blank is `pad_token_id`.
        lid_logits (`torch.FloatTensor` of shape `(batch, num_languages)`, *optional*):
            Language-ID logits: per-frame LID logits averaged over the valid frames (None without a LID head).
        ctc_loss (`torch.FloatTensor` of shape `()`, *optional*):
            CTC loss, reduced as `config.ctc_loss_reduction` says.
        lid_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean cross-entropy of the utterance-level language prediction.
        output_attention_mask (`torch.LongTensor` of shape `(batch, frames)`):
            1 on valid output frames.
        hidden_states, attentions: as in [`MlplModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    lid_logits: torch.FloatTensor | None = None
    ctc_loss: torch.FloatTensor | None = None
    lid_loss: torch.FloatTensor | None = None
    output_attention_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MlplPreTrainedModel(PreTrainedModel):
    config_class = MlplConfig
    config: MlplConfig
    base_model_prefix = "mlpl"
    main_input_name = "input_features"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MlplEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False  # the relative-position term needs an additive bias

    @torch.no_grad()
    def _init_weights(self, module):
        # Flashlight transformerInitLinear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); we use the same rule for
        # the front end and both heads (and their biases).
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            fan_in = module.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (MlplLayerNorm, MlplInputLayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MlplAttention) and module.relative_position_embeddings is not None:
            init.uniform_(module.relative_position_embeddings, -0.1, 0.1)  # docs/design.md §2.3

    def get_output_lengths(self, feature_lengths):
        """Encoder (= logit) frames for feature frame counts: ceil(T / conv_stride)."""
        return compute_output_lengths(feature_lengths, self.config.conv_stride)

    def set_regularization(self, dropout=None, layerdrop=None):
        """Change dropout / layerdrop in place (slimIPL lowers both to 0.1 when it starts, docs/design.md §5).

        Every module reads these values from the shared config at forward time, so this is the only
        place they change, and `save_pretrained` records the current values.
        """
        if dropout is not None:
            if not 0.0 <= dropout < 1.0:
                raise ValueError(f"dropout={dropout} must be in [0, 1)")
            self.config.dropout = float(dropout)
        if layerdrop is not None:
            if not 0.0 <= layerdrop < 1.0:
                raise ValueError(f"layerdrop={layerdrop} must be in [0, 1)")
            self.config.layerdrop = float(layerdrop)


class MlplModel(MlplPreTrainedModel):
    """The encoder: input LayerNorm, convolutional front end and the transformer blocks."""

    def __init__(self, config):
        super().__init__(config)
        self.input_layer_norm = MlplInputLayerNorm(config.layer_norm_eps)
        self.front_end = MlplConvFrontEnd(config)
        self.layers = nn.ModuleList([MlplEncoderLayer(config, index) for index in range(config.num_hidden_layers)])
        # pre-LN stacks end with a LayerNorm (their blocks leave the residual stream unnormalized)
        affine_size = config.hidden_size if config.layer_norm_per_channel else 1
        self.final_layer_norm = MlplLayerNorm(config.layer_norm_eps, affine_size) if config.pre_layer_norm else None
        self.gradient_checkpointing = False
        self.post_init()

    def forward(
        self,
        input_features,
        attention_mask=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`):
            Log-mel features from [`MlplFeatureExtractor`].
        attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*):
            1 on valid feature frames, 0 on padding; without it every frame is valid.
        """
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if input_features.ndim != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"input_features has shape {tuple(input_features.shape)}; expected (batch, frames, "
                f"{self.config.num_mel_bins}) as MlplFeatureExtractor returns"
            )
        batch_size, num_frames, _ = input_features.shape
        if num_frames > MAX_UNCROPPED_SECONDS * 100:
            raise ValueError(
                f"input_features has {num_frames} frames ({num_frames / 100:.0f} s of audio), more than the "
                f"{MAX_UNCROPPED_SECONDS} s one forward takes whole (attention memory grows with the square of the "
                "length); run long audio in crops: pipeline(..., chunk_length_s=20, stride_length_s=4), or "
                "mlpl.inference.chunked_logits"
            )
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, num_frames, dtype=torch.long, device=input_features.device)
        frame_mask = attention_mask.bool()

        hidden_states = self.front_end(self.input_layer_norm(input_features, frame_mask))
        output_lengths = self.get_output_lengths(frame_mask.sum(-1))
        output_mask = torch.arange(hidden_states.shape[1], device=hidden_states.device)[None, :] < output_lengths[:, None]
        key_padding_bias = None
        if _has_padding(output_mask):
            # additive mask over keys only (padded queries are computed and ignored downstream)
            key_padding_bias = torch.zeros(output_mask.shape, dtype=hidden_states.dtype, device=hidden_states.device)
            key_padding_bias = key_padding_bias.masked_fill(~output_mask, torch.finfo(hidden_states.dtype).min)
            key_padding_bias = key_padding_bias[:, None, None, :]

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            # LayerDrop: one draw per layer per forward for the whole batch (Flashlight `fl::rand({1}) < p`).
            drop_branches = self.training and self.config.layerdrop > 0 and float(torch.rand([])) < self.config.layerdrop
            hidden_states, weights = layer(
                hidden_states,
                key_padding_bias=key_padding_bias,
                drop_branches=drop_branches,
                output_attentions=output_attentions,
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
            if output_hidden_states:
                all_hidden_states = all_hidden_states[:-1] + (hidden_states,)

        output = MlplModelOutput(
            last_hidden_state=hidden_states,
            output_attention_mask=output_mask.long(),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()


class MlplForCTC(MlplPreTrainedModel):
    """The encoder with its CTC head and its language-ID head (docs/design.md §2.4-2.6)."""

    def __init__(self, config):
        super().__init__(config)
        self.mlpl = MlplModel(config)
        self.ctc_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.lid_head = nn.Linear(config.hidden_size, config.num_languages) if config.num_languages > 0 else None
        self.post_init()

    def forward(
        self,
        input_features,
        attention_mask=None,
        labels=None,
        language_ids=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        r"""
        input_features (`torch.FloatTensor` of shape `(batch, frames, num_mel_bins)`):
            Log-mel features from [`MlplFeatureExtractor`].
        attention_mask (`torch.LongTensor` of shape `(batch, frames)`, *optional*):
            1 on valid feature frames, 0 on padding.
        labels (`torch.LongTensor` of shape `(batch, target_length)`, *optional*):
            Character ids of the transcripts, padded with -100. Gives the CTC loss.
        language_ids (`torch.LongTensor` of shape `(batch,)`, *optional*):
            LID class of each utterance (index into `config.languages`; -100 = unknown). Gives the LID loss.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        encoded = self.mlpl(
            input_features,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = encoded.last_hidden_state
        output_mask = encoded.output_attention_mask
        logits = self.ctc_head(hidden_states)
        if _has_padding(output_mask):
            # Padded frames emit a certain blank: the ASR pipeline argmaxes a padded batch over all its frames,
            # and those frames must decode to nothing. The losses use exact lengths and never read them.
            blank_only = torch.full_like(logits[0, 0], torch.finfo(logits.dtype).min)
            blank_only[self.config.pad_token_id] = 0.0
            logits = torch.where(output_mask[..., None].bool(), logits, blank_only)

        lid_logits = None
        if self.lid_head is not None:
            # Linear per frame then mean over time == Linear of the mean (the head is affine); ours: valid frames only.
            valid = output_mask[..., None].to(hidden_states.dtype)
            pooled = (hidden_states * valid).sum(1) / valid.sum(1).clamp(min=1)
            lid_logits = self.lid_head(pooled)

        ctc_loss = self.compute_ctc_loss(logits, output_mask.sum(-1), labels) if labels is not None else None
        lid_loss = None
        if language_ids is not None:
            if lid_logits is None:
                raise ValueError(
                    "language_ids were given but this model has no LID head (config.num_languages = 0); "
                    "drop language_ids or build the model with a list of languages"
                )
            lid_loss = self.compute_lid_loss(lid_logits, language_ids)

        loss = None
        if ctc_loss is not None or lid_loss is not None:
            loss = ctc_loss if ctc_loss is not None else 0.0
            if lid_loss is not None:
                loss = loss + self.config.lid_loss_weight * lid_loss

        output = MlplCTCOutput(
            loss=loss,
            logits=logits,
            lid_logits=lid_logits,
            ctc_loss=ctc_loss,
            lid_loss=lid_loss,
            output_attention_mask=output_mask,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output if return_dict else output.to_tuple()

    def compute_ctc_loss(self, logits, output_lengths, labels):
        """CTC loss in float32 with `zero_infinity`, reduced as `config.ctc_loss_reduction` says.

        `"sqrt_target_length"` is Flashlight's: each utterance's negative log-likelihood divided by
        sqrt(its target length), averaged over the batch (docs/design.md §4).
        """
        if not torch.compiler.is_compiling() and labels.max() >= self.config.vocab_size:  # eager checks only
            raise ValueError(
                f"labels contain id {int(labels.max())}, but vocab_size is {self.config.vocab_size}; "
                "the tokenizer and the model config disagree"
            )
        # labels are padded at the end with -100: padded (B, L) targets with lengths, no data-dependent shape
        target_lengths = (labels >= 0).sum(-1)
        targets = labels.clamp(min=0)
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
        # padded int64 (B, L) targets never take cuDNN's CTC (it needs concatenated int32 targets and blank 0)
        per_utterance = F.ctc_loss(
            log_probs,
            targets,
            output_lengths,
            target_lengths,
            blank=self.config.pad_token_id,
            reduction="none",
            zero_infinity=self.config.ctc_zero_infinity,
        )
        reduction = self.config.ctc_loss_reduction
        if reduction == "sum":
            return per_utterance.sum()
        scale = target_lengths.clamp(min=1).to(per_utterance.dtype)
        scale = scale.sqrt() if reduction == "sqrt_target_length" else scale
        return (per_utterance / scale).mean()

    def compute_lid_loss(self, lid_logits, language_ids):
        """Mean cross-entropy over utterances with a known language (-100 = unknown, ignored)."""
        if not torch.compiler.is_compiling() and language_ids.max() >= self.config.num_languages:
            raise ValueError(
                f"language_ids contain {int(language_ids.max())}, but the LID head has {self.config.num_languages} "
                f"classes ({self.config.language_codes[:8]}...); map languages with config.languages"
            )
        # sum over known / their count (0 when none is known), without a data-dependent branch
        per_utterance = F.cross_entropy(lid_logits.float(), language_ids, ignore_index=-100, reduction="none")
        return per_utterance.sum() / (language_ids >= 0).sum().clamp(min=1)

    @torch.no_grad()
    def detect_language(self, input_features, attention_mask=None, top_k=1):
        """Most likely languages of each utterance.

        Returns, per utterance, a list of `top_k` dicts `{"language": code, "score": probability}`,
        most likely first; codes come from `config.languages`.
        """
        if self.lid_head is None:
            raise ValueError("this model has no LID head (config.num_languages = 0), so it cannot detect languages")
        lid_logits = self(input_features, attention_mask=attention_mask).lid_logits
        probabilities = torch.softmax(lid_logits.float(), dim=-1)
        scores, indices = probabilities.topk(min(top_k, probabilities.shape[-1]), dim=-1)
        codes = self.config.language_codes
        return [
            [{"language": codes[index], "score": float(score)} for score, index in zip(row_scores, row_indices.tolist())]
            for row_scores, row_indices in zip(scores, indices)
        ]


__all__ = [
    "AUTO_LANGUAGE",
    "constrain_to_language",
    "constraint_languages",
    "MlplPreTrainedModel",
    "MlplModel",
    "MlplForCTC",
    "MlplModelOutput",
    "MlplCTCOutput",
    "compute_output_lengths",
    "relative_position_scores",
]
