# Copyright 2026 The mlpl authors. Licensed under the Apache License, Version 2.0.
"""The ASR pipeline of mlpl models: the transcript and its language from the same forward pass (docs/design.md §9.1).

    asr = pipeline("automatic-speech-recognition", model=folder)      # + trust_remote_code=True without mlpl
    asr(audio)                      # {"text": ..., "language": "el", "language_score": 0.93}
    asr(audio, top_k_languages=3)   # + "languages": [{"language": "el", "score": 0.93}, ...]
    asr(audio, language="el")       # script-constrained decoding (docs/design.md §3.1); "auto": the LID's top-1
    asr(long_audio, chunk_length_s=20, stride_length_s=4)   # + "chunks": text, timestamp, language per chunk

`MlplAutomaticSpeechRecognitionPipeline` is transformers' `AutomaticSpeechRecognitionPipeline` plus the LID
head's output, read from the pipeline's own forward: a forward hook on the model takes `lid_logits` (and masks
the CTC logits for `language=`) while the stock CTC path runs unchanged, so strides, batching and
`return_timestamps` behave as they do for any CTC model.

Languages of chunked audio: each chunk (window of `chunk_length_s`) owns the frames between its strides,
and its language is its own LID top-1 (code-switched audio changes language from chunk to chunk). The
top-level language is the duration-weighted soft vote: the LID probabilities of the chunks averaged with
weights = the seconds each chunk owns, then the top-1 (for unchunked audio: the utterance's own LID).
With `return_timestamps`, every char / word entry carries the language of the chunk it starts in.

Wiring (docs/design.md §9.1): a saved folder's config.json names this class in `custom_pipelines`, which
transformers loads from the folder with `trust_remote_code=True`; with the package installed,
`register_mlpl_pipeline` (called on `import modeling_mlpl`) makes the task's registered class this one,
which hands every model that is not an mlpl model to the class registered before it (transformers' own).
"""

import bisect

import numpy as np
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline

from .modeling_mlpl import AUTO_LANGUAGE, constrain_to_language


TASK = "automatic-speech-recognition"
MODEL_TYPE = "mlpl"


class MlplAutomaticSpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """`AutomaticSpeechRecognitionPipeline` for `MlplForCTC`: adds `language`, `language_score` (and with
    `top_k_languages=N` the N best as `languages`), per-chunk languages for chunked audio, and `language=`
    for script-constrained decoding. Call arguments are the stock pipeline's plus:

    - `language` (`str`, *optional*): a language code of `config.language_characters`, or "auto" (each
      utterance's, or each chunk's, LID top-1): the CTC output is restricted to that language's characters.
      The returned `language` stays the LID head's prediction.
    - `top_k_languages` (`int`, *optional*): also return the N most likely languages with their scores.
    - `return_language` (Whisper's argument) is accepted; the language is returned either way.
    """

    # The registered class of the task before `register_mlpl_pipeline` (transformers' own, unless another
    # package registered one): it serves every model that is not an mlpl model.
    _fallback_class = AutomaticSpeechRecognitionPipeline

    def __new__(cls, model=None, *args, **kwargs):
        if getattr(getattr(model, "config", None), "model_type", None) != MODEL_TYPE:
            # Registered for the whole task (docs/design.md §9.1): other models get the pipeline they always got.
            return cls._fallback_class(model, *args, **kwargs)
        return super().__new__(cls)

    def _sanitize_parameters(self, language=None, top_k_languages=None, return_language=None, **kwargs):
        # `return_language` (Whisper's switch, which the stock pipeline refuses for other models) is accepted and
        # changes nothing: the language is always in the answer.
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**kwargs)
        if language is not None:
            self._check_language(language)
            forward_params["language"] = language
        if top_k_languages is not None:
            if isinstance(top_k_languages, bool) or not isinstance(top_k_languages, int) or top_k_languages < 1:
                raise ValueError(f"top_k_languages={top_k_languages!r} must be an integer >= 1")
            postprocess_params["top_k_languages"] = top_k_languages
        return preprocess_params, forward_params, postprocess_params

    def _check_language(self, language):
        """Refuse a constraint that cannot apply before any audio is read (the errors name the fix)."""
        if not isinstance(language, str):
            raise ValueError(f"language={language!r} must be a language code or {AUTO_LANGUAGE!r}")
        config = self.model.config
        if language == AUTO_LANGUAGE:
            if getattr(self.model, "lid_head", None) is None:
                raise ValueError(
                    f"language={AUTO_LANGUAGE!r} needs the LID head, which this model lacks (config.num_languages = 0); "
                    "name the language instead"
                )
            if config.language_characters is None:  # the error that names the fix
                config.script_token_ids(config.language_codes[0], self._vocabulary)
        else:
            config.script_token_ids(language, self._vocabulary)

    @property
    def _vocabulary(self):
        if getattr(self, "_vocabulary_cache", None) is None:
            self._vocabulary_cache = self.tokenizer.get_vocab()
        return self._vocabulary_cache

    def _forward(self, model_inputs, return_timestamps=False, language=None, **generate_kwargs):
        captured = {}

        def read_lid_and_constrain(module, args, output):
            captured["lid_logits"] = output.lid_logits
            if language is not None:
                output.logits = constrain_to_language(output.logits, module.config, self._vocabulary, language, output.lid_logits)
            return output

        # The stock CTC path makes the one forward; the hook reads the LID head's output of that same call.
        handle = self.model.register_forward_hook(read_lid_and_constrain)
        try:
            outputs = super()._forward(model_inputs, return_timestamps=return_timestamps, **generate_kwargs)
        finally:
            handle.remove()
        if captured.get("lid_logits") is not None:
            outputs["language_probabilities"] = captured["lid_logits"].float().softmax(-1)
        return outputs

    def postprocess(self, model_outputs, decoder_kwargs=None, return_timestamps=None, return_language=None, top_k_languages=None):
        windows = self._windows(model_outputs)  # before the stock postprocess consumes tokens and strides
        result = super().postprocess(
            model_outputs, decoder_kwargs=decoder_kwargs, return_timestamps=return_timestamps, return_language=return_language
        )
        if any(window["probabilities"] is None for window in windows):
            return result  # no LID head: the stock answer
        codes = self.model.config.language_codes
        weights = np.array([max(window["frames"], 1) for window in windows], dtype=np.float64)
        vote = (np.stack([window["probabilities"] for window in windows]) * weights[:, None]).sum(0) / weights.sum()
        ranking = np.argsort(-vote, kind="stable")
        result["language"], result["language_score"] = codes[ranking[0]], float(vote[ranking[0]])
        if top_k_languages is not None:
            result["languages"] = [{"language": codes[i], "score": float(vote[i])} for i in ranking[:top_k_languages]]
        if not windows[0]["chunked"]:
            return result

        samples_per_frame, sampling_rate = self._align_to, self.feature_extractor.sampling_rate
        starts = [window["start"] for window in windows]
        for window in windows:
            best = int(np.argmax(window["probabilities"]))
            window["language"], window["language_score"] = codes[best], float(window["probabilities"][best])
        if return_timestamps:
            for chunk in result.get("chunks", []):
                frame = chunk["timestamp"][0] * sampling_rate / samples_per_frame + 1e-6
                window = windows[max(bisect.bisect_right(starts, frame) - 1, 0)]
                chunk["language"], chunk["language_score"] = window["language"], window["language_score"]
            return result
        result["chunks"] = self._window_chunks(windows, samples_per_frame, sampling_rate)
        return result

    def _windows(self, model_outputs):
        """Per forward item: its LID probabilities, the output frames it owns between its strides, where they
        start in the stitched sequence, and those frames' argmax tokens."""
        key = "logits" if self.type == "ctc_with_lm" else "tokens"
        windows, start = [], 0
        for output in model_outputs:
            probabilities = output.pop("language_probabilities", None)
            tokens = output[key]
            tokens = tokens.argmax(-1) if key == "logits" else tokens
            stride = output.get("stride")
            if stride is not None:
                total, left, right = stride
                tokens = tokens[:, left : total - right]
            windows.append({
                "probabilities": None if probabilities is None else probabilities.reshape(-1).numpy(),
                "frames": int(tokens.shape[1]),
                "start": start,
                "tokens": tokens.reshape(-1).numpy(),
                "chunked": stride is not None,
            })
            start += int(tokens.shape[1])
        return windows

    def _window_chunks(self, windows, samples_per_frame, sampling_rate):
        """One `chunks` entry per window: its text, time span and language. Characters go to the window
        their first frame is in, so a character that straddles a stride is counted once."""
        tokens = np.concatenate([window["tokens"] for window in windows])
        offsets = self.tokenizer.decode(tokens, output_char_offsets=True)["char_offsets"]
        starts = [window["start"] for window in windows]
        texts = [[] for _ in windows]
        for item in offsets:
            texts[max(bisect.bisect_right(starts, item["start_offset"]) - 1, 0)].append(item["char"])
        return [
            {
                "text": "".join(text).strip(),
                # seconds as the stock pipeline computes them: frames x samples per frame / sampling rate
                "timestamp": (
                    window["start"] * samples_per_frame / sampling_rate,
                    (window["start"] + window["frames"]) * samples_per_frame / sampling_rate,
                ),
                "language": window["language"],
                "language_score": window["language_score"],
            }
            for window, text in zip(windows, texts)
        ]


def register_mlpl_pipeline():
    """Make `pipeline("automatic-speech-recognition", model=<an mlpl model>)` build the mlpl pipeline without
    remote code (docs/design.md §9.1). transformers chooses a pipeline class per task, not per model, so the
    task's entry gets this class, with the same model classes, default and type as before; its `__new__`
    gives every other model the class that was registered before. Safe to call again."""
    from transformers.pipelines import PIPELINE_REGISTRY
    from transformers.pipelines import _resolve_impl
    from transformers.utils import logging

    entry = PIPELINE_REGISTRY.supported_tasks[TASK]
    registered = _resolve_impl(entry["impl"])
    if issubclass(registered, MlplAutomaticSpeechRecognitionPipeline):
        return
    MlplAutomaticSpeechRecognitionPipeline._fallback_class = registered
    base_logger = logging.get_logger("transformers.pipelines.base")
    level = base_logger.level
    base_logger.setLevel(logging.ERROR)  # "already registered. Overwriting" is the point here, not a warning
    try:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=MlplAutomaticSpeechRecognitionPipeline, pt_model=tuple(entry.get("pt", ())),
            default=entry.get("default"), type=entry.get("type"),
        )
    finally:
        base_logger.setLevel(level)


__all__ = ["MlplAutomaticSpeechRecognitionPipeline", "register_mlpl_pipeline"]
