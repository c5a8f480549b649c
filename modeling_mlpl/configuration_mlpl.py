# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the mlpl joint CTC + language-ID transformer encoder.

The defaults are the paper's *base* model ("Pseudo-Labeling for Massively Multilingual Speech
Recognition", Lugosch et al., ICASSP 2022; Flashlight `recipes/mling_pl`):
36 post-LN blocks of width 768, 4 heads, MLP 3072, an 8065-symbol CTC head and a 60-language
LID head = 274,625,103 parameters. `MlplConfig(hidden_size=1536, intermediate_size=6144)` is
the paper's large model (1,058,849,871 parameters).
"""

import copy
from typing import TYPE_CHECKING

from transformers import PreTrainedConfig


if TYPE_CHECKING:
    # config.json's `custom_pipelines` names this class. `save_pretrained` copies a remote-code file together
    # with the files it imports relatively, so this import puts pipeline_mlpl.py next to configuration_mlpl.py
    # in every saved folder (docs/design.md §9.1); at run time nothing is imported.
    from .pipeline_mlpl import MlplAutomaticSpeechRecognitionPipeline  # noqa: F401


# Feature frames are 10 ms apart: Flashlight "mfsc" stride of 160 samples at 16 kHz (docs/design.md §1).
FEATURE_HOP_LENGTH = 160

CTC_LOSS_REDUCTIONS = ("sqrt_target_length", "mean", "sum")

# transformers' custom-pipeline entry written into every saved config.json: `pipeline(..., trust_remote_code=True)`
# on a saved folder loads the ASR pipeline that returns languages from the folder's pipeline_mlpl.py
# (docs/design.md §9.1). With this package installed, its own registration serves mlpl models instead.
MLPL_CUSTOM_PIPELINES = {
    "automatic-speech-recognition": {
        "impl": "pipeline_mlpl.MlplAutomaticSpeechRecognitionPipeline",
        "pt": ["AutoModelForCTC"],
    }
}
# Modules that transformers loads as remote code live under this package (transformers.utils.hub).
_REMOTE_CODE_PACKAGE = "transformers_modules"


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
        language_characters (`dict[str, str]`, *optional*):
            Each language's character inventory, `{code: "characters"}`: the characters its training transcripts
            use (`build_language_characters`, saved by the trainer). Script-constrained decoding
            (`language="el"` / `"auto"`) allows only these, the word delimiter and the blank
            (docs/design.md §3.1). None (models trained before it existed): the constraint is unavailable.
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
        language_characters=None,
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
        if language_characters is not None:
            if not isinstance(language_characters, dict) or not all(
                isinstance(code, str) and isinstance(characters, str) for code, characters in language_characters.items()
            ):
                raise ValueError(
                    f"language_characters must map language codes to strings of characters ({{'el': 'αβγ'}}), got "
                    f"{str(language_characters)[:80]}; build it with modeling_mlpl.build_language_characters"
                )
            language_characters = {code: language_characters[code] for code in sorted(language_characters)}
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
        self.language_characters = language_characters
        # The saved entry is written by `to_dict`. Only a remote-code copy of this class reports it to
        # `pipeline()`: with the package installed the registered pipeline serves mlpl models (docs/design.md §9.1),
        # and the entry would make `pipeline()` demand `trust_remote_code=True` for a local class.
        kwargs.pop("custom_pipelines", None)
        if __name__.split(".")[0] == _REMOTE_CODE_PACKAGE:
            self.custom_pipelines = copy.deepcopy(MLPL_CUSTOM_PIPELINES)
        # The pipeline finds the character tokenizer through the config, also as remote code.
        kwargs.setdefault("tokenizer_class", "Wav2Vec2CTCTokenizer")
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def to_dict(self):
        output = super().to_dict()
        output["custom_pipelines"] = copy.deepcopy(MLPL_CUSTOM_PIPELINES)
        return output

    def script_token_ids(self, language: str, vocabulary: dict[str, int]) -> list[int]:
        """Token ids that script-constrained decoding allows for `language` (docs/design.md §3.1): its
        `language_characters` found in `vocabulary` (the tokenizer's `get_vocab()`), the word delimiter "|"
        and the blank, sorted."""
        if self.language_characters is None:
            raise ValueError(
                "this model's config has no language_characters (it was trained before character inventories were "
                "saved), so decoding cannot be constrained to a language's script; set them from the training "
                "transcripts: config.language_characters = modeling_mlpl.build_language_characters(pairs of "
                "(language, transcript)), e.g. mlpl.streaming.stream_transcripts(train sources), then save the model "
                "(or decode without language=)"
            )
        if language not in self.language_characters:
            raise ValueError(
                f"language {language!r} has no character inventory in this model's config; it has "
                f"{sorted(self.language_characters)} (use one of them, or 'auto' for the LID's prediction)"
            )
        allowed = {vocabulary[char] for char in self.language_characters[language] if char in vocabulary}
        allowed.add(self.pad_token_id)
        if "|" in vocabulary:
            allowed.add(vocabulary["|"])
        return sorted(allowed)

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


__all__ = ["MlplConfig", "MLPL_CUSTOM_PIPELINES"]
