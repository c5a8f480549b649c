# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""mlpl: a transformers-native joint CTC + language-ID speech encoder.

Importing this package registers the model with the Auto classes (AutoConfig, AutoModel,
AutoModelForCTC, AutoFeatureExtractor, AutoProcessor) and its ASR pipeline (the transcript with its
language, for mlpl models only), and marks the classes for remote code,
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
    AUTO_LANGUAGE,
    MlplCTCOutput,
    MlplForCTC,
    MlplModel,
    MlplModelOutput,
    MlplPreTrainedModel,
    compute_output_lengths,
    constrain_to_language,
    constraint_languages,
    relative_position_scores,
)
from .pipeline_mlpl import MlplAutomaticSpeechRecognitionPipeline, register_mlpl_pipeline
from .processing_mlpl import (
    MlplProcessor,
    build_language_characters,
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
# pipeline("automatic-speech-recognition", model=<mlpl model>) returns languages; other models keep their
# pipeline (docs/design.md §9.1). A saved folder names the same class in config.json's custom_pipelines.
register_mlpl_pipeline()

__all__ = [
    "MlplConfig",
    "MlplFeatureExtractor",
    "MlplProcessor",
    "MlplPreTrainedModel",
    "MlplModel",
    "MlplForCTC",
    "MlplModelOutput",
    "MlplCTCOutput",
    "MlplAutomaticSpeechRecognitionPipeline",
    "AUTO_LANGUAGE",
    "constrain_to_language",
    "constraint_languages",
    "build_language_characters",
    "build_vocabulary",
    "build_tokenizer",
    "unknown_characters",
    "describe_characters",
    "compute_output_lengths",
    "relative_position_scores",
    "htk_mel_filter_bank",
]
