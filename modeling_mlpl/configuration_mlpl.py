# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the mlpl joint CTC + language-ID transformer encoder.

The defaults are the paper's *base* model ("Pseudo-Labeling for Massively Multilingual Speech
Recognition", Lugosch et al., ICASSP 2022; Flashlight `recipes/mling_pl`):
36 post-LN blocks of width 768, 4 heads, MLP 3072, an 8065-symbol CTC head and a 60-language
LID head = 274,625,103 parameters. `MlplConfig(hidden_size=1536, intermediate_size=6144)` is
the paper's large model (1,058,849,871 parameters).
"""

from transformers import PreTrainedConfig


# Feature frames are 10 ms apart: Flashlight "mfsc" stride of 160 samples at 16 kHz (docs/design.md §1).
FEATURE_HOP_LENGTH = 160

CTC_LOSS_REDUCTIONS = ("sqrt_target_length", "mean", "sum")


class MlplConfig(PreTrainedConfig):
    r"""
    Configuration for [`MlplModel`] and [`MlplForCTC`].

    Args:
        vocab_size (`int`, defaults to 8065):
            Number of CTC output symbols, blank included (8064 characters + blank in the paper).
        hidden_size (`int`, defaults to 768):
            Width of the transformer blocks (1536 for the large model).
        num_hidden_layers (`int`, defaults to 36):
            Number of post-LN transformer blocks.
        num_attention_heads (`int`, defaults to 4):
            Attention heads; the head dimension is `hidden_size / num_attention_heads`.
        intermediate_size (`int`, defaults to 3072):
            Width of the blocks' ReLU MLP (6144 for the large model).
        num_mel_bins (`int`, defaults to 80):
            Input feature size (Flashlight log-mel filterbanks).
        conv_kernel_size (`int`, defaults to 7):
            Kernel of the 1-D convolutional front end.
        conv_stride (`int`, defaults to 3):
            Stride of the front end: one output frame per 3 feature frames (30 ms).
        max_relative_positions (`int`, defaults to 920):
            Size P of the relative-position window: each layer learns a table of 2P-1 rows, and
            query/key pairs further than P-1 frames apart get no positional term (Flashlight `bptt`).
        dropout (`float`, defaults to 0.3):
            Dropout after the front end, on the attention weights and inside the MLP.
        layerdrop (`float`, defaults to 0.3):
            Probability that a block's attention and MLP branches are dropped in a training forward.
        layer_norm_eps (`float`, defaults to 1e-5):
            Epsilon of every LayerNorm.
        layer_norm_per_channel (`bool`, defaults to `False`):
            Give the blocks' LayerNorms one weight and bias per channel instead of Flashlight's single
            scalar pair. Only for M-CTC-T checkpoints fine-tuned after their conversion (the converter sets
            it when their LayerNorm vectors are not constant); the paper's networks use scalars.
        pre_layer_norm (`bool`, defaults to `False`):
            Pre-LN blocks (`h = x + f Attn(LN1(x)); y = h + f MLP(LN2(h))`, Flashlight `preLN=true`) with
            one more LayerNorm after the last block, instead of the paper's post-LN blocks. Small, deep
            models trained for few updates (the CPU demo) leave the CTC blank plateau much sooner with it.
        languages (`list[str]`, *optional*):
            Language codes of the LID classes; index `i` is LID class `i`. When given, it fixes
            `num_languages`.
        num_languages (`int`, defaults to 60):
            Number of LID classes. 0 builds a model without a LID head (e.g. a converted M-CTC-T
            checkpoint, which was released without one).
        lid_loss_weight (`float`, defaults to 1.0):
            gamma in loss = CTC + gamma * LID (paper: 1.0 is best).
        ctc_loss_reduction (`str`, defaults to `"sqrt_target_length"`):
            `"sqrt_target_length"`: Flashlight's per-utterance CTC loss divided by sqrt(target
            length), averaged over the batch (docs/design.md §4); `"mean"`: torch's mean (loss divided by
            target length, averaged over the batch); `"sum"`: summed over the batch.
        ctc_zero_infinity (`bool`, defaults to `True`):
            Zero infinite CTC losses (targets longer than the output) and their gradients.
    """

    model_type = "mlpl"

    def __init__(
        self,
        vocab_size=8065,
        hidden_size=768,
        num_hidden_layers=36,
        num_attention_heads=4,
        intermediate_size=3072,
        num_mel_bins=80,
        conv_kernel_size=7,
        conv_stride=3,
        max_relative_positions=920,
        dropout=0.3,
        layerdrop=0.3,
        layer_norm_eps=1e-5,
        layer_norm_per_channel=False,
        pre_layer_norm=False,
        languages=None,
        num_languages=60,
        lid_loss_weight=1.0,
        ctc_loss_reduction="sqrt_target_length",
        ctc_zero_infinity=True,
        pad_token_id=0,
        **kwargs,
    ):
        if languages is not None:
            languages = [str(code) for code in languages]
            if len(set(languages)) != len(languages):
                duplicates = sorted({code for code in languages if languages.count(code) > 1})
                raise ValueError(f"`languages` must not repeat a code; repeated: {duplicates}")
            num_languages = len(languages)

        _require_positive_int("vocab_size", vocab_size)
        _require_positive_int("hidden_size", hidden_size)
        _require_positive_int("num_hidden_layers", num_hidden_layers, allow_zero=True)
        _require_positive_int("num_attention_heads", num_attention_heads)
        _require_positive_int("intermediate_size", intermediate_size)
        _require_positive_int("num_mel_bins", num_mel_bins)
        _require_positive_int("conv_kernel_size", conv_kernel_size)
        _require_positive_int("conv_stride", conv_stride)
        _require_positive_int("max_relative_positions", max_relative_positions, allow_zero=True)
        _require_positive_int("num_languages", num_languages, allow_zero=True)
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}; "
                "choose a hidden size that is a multiple of the number of heads (768 / 4 = 192 in the paper)"
            )
        if conv_kernel_size % 2 != 1:
            raise ValueError(
                f"conv_kernel_size={conv_kernel_size} must be odd so that the front end pads both sides equally "
                "(the paper uses 7)"
            )
        for name, value in (("dropout", dropout), ("layerdrop", layerdrop)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1) (the paper uses 0.3, slimIPL lowers it to 0.1)")
        if float(lid_loss_weight) < 0:
            raise ValueError(f"lid_loss_weight={lid_loss_weight} must be >= 0 (the paper uses 1.0)")
        if ctc_loss_reduction not in CTC_LOSS_REDUCTIONS:
            raise ValueError(f"ctc_loss_reduction={ctc_loss_reduction!r} must be one of {CTC_LOSS_REDUCTIONS}")
        if layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps={layer_norm_eps} must be > 0")
        if pad_token_id is not None and not 0 <= pad_token_id < vocab_size:
            raise ValueError(f"pad_token_id={pad_token_id} (the CTC blank) must be in [0, vocab_size={vocab_size})")

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_mel_bins = num_mel_bins
        self.conv_kernel_size = conv_kernel_size
        self.conv_stride = conv_stride
        self.max_relative_positions = max_relative_positions
        self.dropout = float(dropout)
        self.layerdrop = float(layerdrop)
        self.layer_norm_eps = layer_norm_eps
        self.layer_norm_per_channel = bool(layer_norm_per_channel)
        self.pre_layer_norm = bool(pre_layer_norm)
        self.languages = languages
        self.num_languages = num_languages
        self.lid_loss_weight = float(lid_loss_weight)
        self.ctc_loss_reduction = ctc_loss_reduction
        self.ctc_zero_infinity = ctc_zero_infinity
        # The pipeline finds the character tokenizer through the config, also as remote code.
        kwargs.setdefault("tokenizer_class", "Wav2Vec2CTCTokenizer")
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Raw samples per output frame: 160 (10 ms feature hop) x 3 (conv stride) = 480.

        The ASR pipeline reads it to chunk long audio and to place timestamps (docs/design.md §9).
        """
        return FEATURE_HOP_LENGTH * self.conv_stride

    @property
    def language_codes(self) -> list[str]:
        """LID class names: `languages` when set, else placeholders `lid_0`, `lid_1`, ..."""
        if self.languages is not None:
            return list(self.languages)
        return [f"lid_{index}" for index in range(self.num_languages)]


def _require_positive_int(name, value, allow_zero=False):
    lowest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ValueError(f"{name}={value!r} must be an integer >= {lowest}")


__all__ = ["MlplConfig"]
