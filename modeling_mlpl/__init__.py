# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""mlpl: a transformers-native joint CTC + language-ID speech encoder.

Importing this package registers the model with the Auto classes (AutoConfig, AutoModel,
AutoModelForCTC, AutoFeatureExtractor, AutoProcessor) and marks the classes for remote code,
so that `save_pretrained` writes `auto_map` and copies these files next to the weights: a folder
saved here loads anywhere with `trust_remote_code=True`, without this package installed.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForCTC,
    AutoProcessor,
)

from .configuration_mlpl import MlplConfig
from .feature_extraction_mlpl import MlplFeatureExtractor, htk_mel_filter_bank
from .modeling_mlpl import (
    MlplCTCOutput,
    MlplForCTC,
    MlplModel,
    MlplModelOutput,
    MlplPreTrainedModel,
    compute_output_lengths,
    relative_position_scores,
)
from .processing_mlpl import (
    MlplProcessor,
    build_tokenizer,
    build_vocabulary,
    describe_characters,
    unknown_characters,
)


AutoConfig.register(MlplConfig.model_type, MlplConfig, exist_ok=True)
AutoModel.register(MlplConfig, MlplModel, exist_ok=True)
AutoModelForCTC.register(MlplConfig, MlplForCTC, exist_ok=True)
AutoFeatureExtractor.register(MlplConfig, MlplFeatureExtractor, exist_ok=True)
AutoProcessor.register(MlplConfig, MlplProcessor, exist_ok=True)

MlplConfig.register_for_auto_class()
MlplModel.register_for_auto_class("AutoModel")
MlplForCTC.register_for_auto_class("AutoModelForCTC")
MlplFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
MlplProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "MlplConfig",
    "MlplFeatureExtractor",
    "MlplProcessor",
    "MlplPreTrainedModel",
    "MlplModel",
    "MlplForCTC",
    "MlplModelOutput",
    "MlplCTCOutput",
    "build_vocabulary",
    "build_tokenizer",
    "unknown_characters",
    "describe_characters",
    "compute_output_lengths",
    "relative_position_scores",
    "htk_mel_filter_bank",
]
