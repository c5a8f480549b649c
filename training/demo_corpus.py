"""The built-in demo corpus: synthetic multilingual speech made offline, in the layouts of the real sources.

Nothing can be downloaded at run time and users want to try the recipe in minutes, so this module
synthesizes a small corpus with the shape of the paper's data (issue 3):

- speech from eSpeak NG (GPL-3), called through ctypes from the `espeakng-loader` wheel, which ships the
  library and its voice data (no system package, no subprocess);
- text from the `wordfreq` word lists (data CC-BY-SA 4.0) turned into sentences;
- a labeled part in Common Voice layout, `cv/<lang>/clips/*.mp3` (48 kHz) with `train/dev/test/validated.tsv`,
  and an unlabeled part in VoxPopuli layout, `voxpopuli/<lang>/<year>/*.ogg` (16 kHz, 10-30 s utterances of
  several sentences), so that the real loaders (`mlpl.data`, sources 2 and 3) are what reads it;
- with `voxpopuli_domain="plenary_hall"` (opt-in): every VoxPopuli-layout utterance (unlabeled, mixed,
  transcribed) is heard through a plenary hall (`far_field`: reverberation, the band of a room microphone
  and its noise), as real VoxPopuli is recorded in the European Parliament and real Common Voice on the
  readers' own microphones; and the languages with unlabeled audio get a transcribed VoxPopuli part in that
  hall, in VoxPopuli's ASR layout, `voxpopuli_asr/<lang>/asr_{dev,test}.tsv` + `<lang>/<year>/<id>.ogg`:
  held-out speech of the unlabeled audio's domain, to measure what its pseudo-labels bring there (as the
  paper measures its final model out of Common Voice's domain, on LibriSpeech; docs/design.md §11). The
  default, "same", renders both parts alike (the corpus of earlier versions, bit for bit);
- a small mixed-language unlabeled folder, `voxpopuli_mixed/und/<year>/*.ogg` (VoxPopuli layout, language
  "und": unknown), a few utterances of every language, for stage 4's LID routing (docs/design.md §10);
  the true language and text of each utterance are in `voxpopuli_mixed/manifest.tsv`, which no recipe code
  reads (routing accuracy is scored against it by `mlpl.report.routing_accuracy`); likewise the true text of
  every unlabeled utterance is in `voxpopuli/answer_key.tsv`, read only by the oracle topline of the
  ablations (`slimipl.oracle_transcripts`: the unlabeled audio trained with its true transcripts in place
  of pseudo-labels, the most that pseudo-labels could give);
- paper-like imbalance: "high" languages with over an hour of labeled training audio, "mid" ones with
  minutes, and "low" ones with a few minutes labeled plus unlabeled audio (the languages pseudo-labeling
  helps, docs/design.md §5);
- every clip has its own voice variant, rate, pitch, pitch range, gain, noise level and silences, drawn from
  per-split speaker pools (train/dev/test speakers are disjoint, as in Common Voice).

Everything random is drawn in the main process from `numpy.random.default_rng([seed, ...])` keyed by the
clip, and clips are rendered in fixed chunks, each in a fresh process (eSpeak carries state from one
utterance to the next), so the corpus is the same for a seed whatever the number of workers: identical
TSVs and mp3 files; the ogg files differ only in the random stream serial number libsndfile writes into
their page headers (their audio is identical). The corpus is built in a temporary
folder and renamed into place at the end; `manifest.json` is written last and a corpus whose manifest has
the same parameters is not rebuilt.

Where the time goes (default size, 2 cores): mp3 encoding at 48 kHz (~95x real time per core) dominates,
then eSpeak synthesis (~400x), ogg encoding (~350x) and soxr resampling (> 2000x).
"""

from __future__ import annotations

import ctypes
import csv
import datetime
import functools
import hashlib
import json
import math
import multiprocessing
import os
import time
import unicodedata
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile
import soxr
from tqdm.auto import tqdm

from .files import atomic_directory, atomic_writer, write_json_atomically

# Bump when the output of a given (size, seed) changes, so that old corpora are rebuilt.
# 3: the mixed-language folder voxpopuli_mixed/; 4: voxpopuli/answer_key.tsv (every earlier clip unchanged)
DEMO_CORPUS_VERSION = 4
# How the VoxPopuli-layout part sounds: "same" as the Common Voice part, or through a "plenary_hall" (far_field),
# which also adds the transcribed voxpopuli_asr/ sets (docs/design.md §11).
VOXPOPULI_DOMAINS = ("same", "plenary_hall")

LABELED_SAMPLING_RATE = 48000  # Common Voice clips are 48 kHz mp3
UNLABELED_SAMPLING_RATE = 16000  # VoxPopuli segments are 16 kHz ogg/vorbis
LABELED_SPLITS = ("train", "dev", "test")
UNLABELED = "unlabeled"
MIXED = "mixed"  # the mixed-language unlabeled folder (language unknown to the recipe)
MIXED_FOLDER = "voxpopuli_mixed"  # a VoxPopuli-layout root holding one folder, `und/`
MIXED_LANGUAGE = "und"  # ISO 639-2 "undetermined": the data layer's language of its clips
MIXED_MANIFEST = "manifest.tsv"  # beside `und/`: id, path, language, duration, sentence (the answer key)
UNLABELED_ANSWER_KEY = "answer_key.tsv"  # voxpopuli/answer_key.tsv: the same columns for the unlabeled audio
# Transcribed VoxPopuli-domain speech (VoxPopuli's ASR layout) for the languages with unlabeled audio.
VOXPOPULI_ASR_FOLDER = "voxpopuli_asr"
TRANSCRIBED_SPLITS = {"vp_dev": "dev", "vp_test": "test"}  # corpus split -> its asr_<split>.tsv
VOXPOPULI_ASR_COLUMNS = ["id", "raw_text", "normalized_text", "speaker_id", "split", "gender", "is_gold_transcript", "accent"]
# Every random draw is keyed by the split's position here; new splits go at the end (old clips unchanged).
_SPLIT_KEYS = ("train", "dev", "test", UNLABELED, MIXED, *TRANSCRIBED_SPLITS)
# The splits in VoxPopuli's layouts: 16 kHz ogg; with voxpopuli_domain "plenary_hall", heard through the hall.
_VOXPOPULI_SPLITS = (UNLABELED, MIXED, *TRANSCRIBED_SPLITS)

LICENSES = {
    "speech": "synthesized with eSpeak NG (GPL-3.0-or-later), https://github.com/espeak-ng/espeak-ng",
    "text": "sentences from wordfreq word lists (data CC-BY-SA 4.0; code Apache-2.0), https://github.com/rspeer/wordfreq",
}


@dataclass(frozen=True)
class DemoLanguage:
    """One corpus language: its code (eSpeak voice and wordfreq list alike), script and resource level."""

    code: str
    script: str  # the prefix of its letters' Unicode names: "LATIN", "CYRILLIC", "GREEK"
    role: str  # "high", "mid" or "low"


# 7 languages in 3 scripts. The low-resource ones are VoxPopuli languages, as in the paper (CV labeled +
# VoxPopuli unlabeled).
LANGUAGES = (
    DemoLanguage("en", "LATIN", "high"),
    DemoLanguage("de", "LATIN", "high"),
    DemoLanguage("es", "LATIN", "mid"),
    DemoLanguage("ru", "CYRILLIC", "mid"),
    DemoLanguage("fi", "LATIN", "low"),
    DemoLanguage("el", "GREEK", "low"),
    DemoLanguage("bg", "CYRILLIC", "low"),
)

# Minutes of audio per split for each resource level. "high" train > 60 min (languages with over an hour);
# "low" is a few minutes labeled plus over ten times as much unlabeled audio. Dev and test hold 5 minutes per
# language (~75 clips), so that a few points of CER are more than noise. Default total: ~3.7 h labeled mp3
# and ~2 h unlabeled ogg, which builds in about 3 minutes on 2 cores.
SIZES: dict[str, dict[str, dict[str, float]]] = {
    "default": {
        "high": {"train": 61.0, "dev": 5.0, "test": 5.0, UNLABELED: 0.0},
        "mid": {"train": 10.0, "dev": 5.0, "test": 5.0, UNLABELED: 0.0},
        "low": {"train": 3.0, "dev": 5.0, "test": 5.0, UNLABELED: 40.0, "vp_dev": 5.0, "vp_test": 5.0},
    },
    # A few clips per split, for tests: builds in seconds.
    "tiny": {
        "high": {"train": 0.4, "dev": 0.08, "test": 0.08, UNLABELED: 0.0},
        "mid": {"train": 0.2, "dev": 0.08, "test": 0.08, UNLABELED: 0.0},
        "low": {"train": 0.1, "dev": 0.08, "test": 0.08, UNLABELED: 0.15, "vp_dev": 0.08, "vp_test": 0.08},
    },
}
# Minutes of the mixed-language folder per language (every language, whatever its role): a few minutes in all
# (default ~5 min, 2-3 utterances a language; tiny one utterance a language).
MIXED_MINUTES = {"default": 0.7, "tiny": 0.1}

# Speakers: each split draws from its own pool (disjoint speakers, like Common Voice's splits).
SPEAKERS_PER_SPLIT = {"train": 24, "dev": 4, "test": 4, UNLABELED: 12, MIXED: 6, "vp_dev": 4, "vp_test": 4}
# eSpeak NG voice variants (espeak-ng-data/voices/!v): male, female and Klatt-synthesizer voices. None
# with a `breath` line (f2, f3, f5...): their breath noise comes from a generator that eSpeak seeds from
# the clock and exports no way to reseed, which would make the corpus differ from build to build.
VOICE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f4", "Andrea", "anika", "belinda",
    "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "boris", "david", "linda", "max", "steph", "norbert",
)
WORDS_PER_SENTENCE = (5, 13)  # inclusive; Common Voice sentences are short (a few seconds read aloud)
VOCABULARY_SIZE = 3000  # the most frequent words of each language that sentences are built from
UNLABELED_SECONDS = (10.0, 30.0)  # VoxPopuli segment lengths

# The plenary hall (voxpopuli_domain "plenary_hall") every VoxPopuli-layout utterance is heard through
# (`far_field`): reverberation time and direct-to-reverberant ratio of the room, the pass band of a room
# microphone, and the SNR of the hall's (pink) noise; each utterance draws its own values in these ranges.
# Mild on purpose: models trained on the dry labeled part are brittle. The demo's stage-1 model (Common Voice
# dev CER bg 26 / el 46 / fi 30 %) reads these at 44 / 55 / 38 %; RT60 0.4-0.8 s alone gives 83 / 80 / 65 %, a
# 200-4000 Hz band with 15-25 dB SNR and mild reverberation 84 / 72 / 51 % (docs/design.md §11).
PLENARY_HALL = {"rt60_seconds": (0.1, 0.25), "direct_to_reverberant_db": (6.0, 12.0), "band_hz": (100.0, 6000.0), "snr_db": (20.0, 30.0)}

# First guesses of clip lengths, to size the first round of work; later rounds fill what is missing.
_FIRST_GUESS_SECONDS = {"labeled": 4.0, UNLABELED: 20.0}
# Audio per task of a worker: ~2.5 s of work at ~100x real time, against ~20 ms to fork a fresh process.
CHUNK_SECONDS = 240.0


# ---------------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# ---------------------------------------------------------------------------------------------

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_VOLUME, _ESPEAK_PITCH, _ESPEAK_RANGE = 1, 2, 3, 4
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakSynthesizer:
    """eSpeak NG in synchronous mode: text in, int16 samples at `sampling_rate` (22050 Hz) out.

    The library has global state, so there is one instance per process (`espeak_synthesizer()`).
    """

    def __init__(self):
        import espeakng_loader  # optional dependency: the `demo` extra

        self.library = ctypes.CDLL(espeakng_loader.get_library_path())
        self.library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.library.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.library.espeak_Info.restype = ctypes.c_char_p
        self.library.espeak_Info.argtypes = [ctypes.c_void_p]
        data_path = espeakng_loader.get_data_path().encode()
        self.sampling_rate = self.library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if self.sampling_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sampling_rate}) with data path {data_path!r}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: the library calls it later
        self.library.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0: continue synthesis

    @property
    def version(self) -> str:
        return self.library.espeak_Info(None).decode()

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
        """Speak `text`.

        Args:
            voice: "<language>+<variant>", e.g. "el+f3".
            rate: words per minute (eSpeak default 175).
            pitch, pitch_range: 0-100 (eSpeak default 50 each).

        Returns:
            int16 `(n_samples,)` at `self.sampling_rate`.
        """
        if self.library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}; see espeak-ng-data/voices/!v and lang/")
        for parameter, value in ((_ESPEAK_RATE, rate), (_ESPEAK_PITCH, pitch), (_ESPEAK_RANGE, pitch_range)):
            self.library.espeak_SetParameter(parameter, int(value), 0)
        self._chunks = []
        encoded = text.encode("utf-8")
        status = self.library.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed ({status}) for {text!r} with voice {voice!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


@functools.cache
def espeak_synthesizer() -> EspeakSynthesizer:
    """The process's synthesizer, created on first use (in each worker process)."""
    return EspeakSynthesizer()


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _is_word_of_script(word: str, script: str) -> bool:
    return all(unicodedata.name(character, "").startswith(script) for character in word)


@functools.cache
def vocabulary(language: DemoLanguage) -> tuple[str, ...]:
    """The language's most frequent words written only in its script (no digits, Latin loans or apostrophes)."""
    import wordfreq  # optional dependency: the `demo` extra

    words = []
    for word in wordfreq.top_n_list(language.code, VOCABULARY_SIZE * 2):
        if language.code == "el" and word.endswith("σ"):
            word = word[:-1] + "ς"  # wordfreq folds the final sigma; written Greek uses it
        if _is_word_of_script(word, language.script):
            words.append(word)
    return tuple(words[:VOCABULARY_SIZE])


def make_sentence(words: tuple[str, ...], rng: np.random.Generator) -> str:
    """A sentence of 5-13 words drawn with weights 1/sqrt(rank): frequent words dominate, as in real text."""
    weights = 1.0 / np.sqrt(np.arange(1, len(words) + 1))
    count = rng.integers(WORDS_PER_SENTENCE[0], WORDS_PER_SENTENCE[1] + 1)
    chosen = [words[i] for i in rng.choice(len(words), size=count, p=weights / weights.sum())]
    return " ".join(chosen).capitalize() + "."


# ---------------------------------------------------------------------------------------------
# Jobs: everything random is drawn here, in the main process
# ---------------------------------------------------------------------------------------------


def _clip_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _speaker(seed: int, language_index: int, split: str, speaker_index: int) -> dict:
    """A speaker: a voice variant with its own typical rate, pitch and pitch range; `client_id` like CV's hash."""
    split_index = _SPLIT_KEYS.index(split)
    rng = _clip_rng(seed, language_index, 100 + split_index, speaker_index)
    language = LANGUAGES[language_index]
    return {
        "client_id": hashlib.sha256(f"{seed}/{language.code}/{split}/{speaker_index}".encode()).hexdigest(),
        "variant": VOICE_VARIANTS[rng.integers(len(VOICE_VARIANTS))],
        "rate": int(rng.integers(135, 196)),
        "pitch": int(rng.integers(25, 76)),
        "pitch_range": int(rng.integers(30, 81)),
    }


def _make_job(seed: int, language_index: int, split: str, index: int, folder: Path, voxpopuli_domain: str = "same") -> dict:
    """Everything a worker needs to render one clip (labeled) or one utterance (unlabeled)."""
    language = LANGUAGES[language_index]
    split_index = _SPLIT_KEYS.index(split)
    rng = _clip_rng(seed, language_index, split_index, index)
    speaker = _speaker(seed, language_index, split, int(rng.integers(SPEAKERS_PER_SPLIT[split])))
    words = vocabulary(language)
    if split in TRANSCRIBED_SPLITS:
        texts = [make_sentence(words, rng)]
        year = 2009 + index % 12
        # VoxPopuli's ids start with the session's date; the audio is at <lang>/<year>/<id>.ogg
        name = f"{year}/{year}0101-0900-PLENARY-demo-{language.code}_{split[3]}{index:05d}.ogg"
        target_seconds = None
    elif split in (UNLABELED, MIXED):
        # Enough sentences for the longest utterance; the worker stops at the drawn length.
        texts = [make_sentence(words, rng) for _ in range(16)]
        year = 2009 + index % 12
        name = f"{year}/demo_{year}_{language.code}_{index:05d}.ogg"
        if split == MIXED:  # a name that does not give the language away
            name = f"{year}/demo_{year}_{MIXED_LANGUAGE}_{hashlib.sha256(f'{seed}/{language.code}/{index}'.encode()).hexdigest()[:12]}.ogg"
        target_seconds = float(rng.uniform(*UNLABELED_SECONDS))
    else:
        texts = [make_sentence(words, rng)]
        name = f"clips/common_voice_{language.code}_{split_index}{index:06d}.mp3"
        target_seconds = None
    return {
        "language_index": language_index,
        "split": split,
        "index": index,
        "path": os.fspath(folder / name),
        "name": name,
        "texts": texts,
        "target_seconds": target_seconds,
        "voice": f"{language.code}+{speaker['variant']}",
        "client_id": speaker["client_id"],
        # per-clip jitter around the speaker's habits, so that no two clips sound alike
        "rate": speaker["rate"] + int(rng.integers(-12, 13)),
        "pitch": min(99, max(1, speaker["pitch"] + int(rng.integers(-6, 7)))),
        "pitch_range": speaker["pitch_range"],
        "peak": float(rng.uniform(0.3, 0.9)),
        "snr_db": float(rng.uniform(25.0, 45.0)),
        "silences": rng.uniform(0.1, 0.5, size=len(texts) + 1).round(3).tolist(),
        "noise_seed": int(rng.integers(2**31)),
        # drawn from a stream of its own, so that adding the hall left every other draw of a clip unchanged
        "room": _room(_clip_rng(seed, language_index, split_index, index, 1)) if split in _VOXPOPULI_SPLITS and voxpopuli_domain == "plenary_hall" else None,
    }


def _room(rng: np.random.Generator) -> dict:
    """One utterance's acoustics in the plenary hall (PLENARY_HALL's ranges)."""
    return {
        "rt60_seconds": float(rng.uniform(*PLENARY_HALL["rt60_seconds"])),
        "direct_to_reverberant_db": float(rng.uniform(*PLENARY_HALL["direct_to_reverberant_db"])),
        "snr_db": float(rng.uniform(*PLENARY_HALL["snr_db"])),
    }


# ---------------------------------------------------------------------------------------------
# Rendering (in worker processes)
# ---------------------------------------------------------------------------------------------


def _speak(job: dict) -> tuple[np.ndarray, int, int]:
    """Synthesize the job's text(s) with silences around; (float32 `(n,)`, eSpeak's rate in Hz, texts spoken)."""
    synthesizer = espeak_synthesizer()
    rate = synthesizer.sampling_rate
    silence = lambda seconds: np.zeros(int(seconds * rate), dtype=np.float32)  # noqa: E731
    pieces, length, spoken = [silence(job["silences"][0])], 0, 0
    for text, pause in zip(job["texts"], job["silences"][1:]):
        speech = synthesizer.synthesize(text, job["voice"], job["rate"], job["pitch"], job["pitch_range"])
        addition = speech.size + int(pause * rate)
        if job["target_seconds"] is not None and length > 0 and (length + addition) / rate > UNLABELED_SECONDS[1]:
            break  # VoxPopuli segments are at most 30 s
        pieces += [speech.astype(np.float32) / 32768.0, silence(pause)]
        length += addition
        spoken += 1
        if job["target_seconds"] is not None and length / rate >= job["target_seconds"]:
            break
    return np.concatenate(pieces), rate, spoken


def _fft_length(samples: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(samples, 1))))


def far_field(waveform: np.ndarray, sampling_rate: int, room: dict, rng: np.random.Generator) -> np.ndarray:
    """`waveform` as a room microphone in the plenary hall hears it (docs/design.md §11).

    1. Reverberation: convolution with the direct sound plus a diffuse tail of Gaussian noise decaying by
       60 dB in `room["rt60_seconds"]` (from 2 ms on), scaled to `room["direct_to_reverberant_db"]`.
    2. The hall's noise: pink (1/f power) noise at `room["snr_db"]` below the reverberant speech.
    3. The microphone's pass band, PLENARY_HALL["band_hz"], on speech and noise alike: 4th-order high-pass and
       8th-order low-pass magnitude responses applied in the frequency domain.

    Returns float32 of the same length, peak-normalized to the input's peak. Deterministic given `rng`.
    """
    waveform = np.asarray(waveform, dtype=np.float64)
    peak = float(np.abs(waveform).max()) if waveform.size else 0.0
    tail = max(1, int(room["rt60_seconds"] * sampling_rate))
    times = np.arange(tail) / sampling_rate
    response = rng.standard_normal(tail) * np.exp(-6.91 * times / room["rt60_seconds"])  # ln(1000) = 6.91: -60 dB
    response[: int(0.002 * sampling_rate)] = 0.0
    response *= 10 ** (-room["direct_to_reverberant_db"] / 20) / max(math.sqrt(float(np.sum(response**2))), 1e-12)
    response[0] = 1.0  # the direct sound
    size = _fft_length(waveform.size + tail)
    frequencies = np.fft.rfftfreq(size, 1.0 / sampling_rate)
    speech = np.fft.irfft(np.fft.rfft(waveform, size) * np.fft.rfft(response, size), size)[: waveform.size]
    pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(size)) / np.sqrt(np.maximum(frequencies, 20.0)), size)[: waveform.size]
    speech_power, noise_power = float(np.mean(speech**2)), float(np.mean(pink**2))
    if noise_power > 0 and speech_power > 0:  # the hall's noise, at the drawn SNR below the reverberant speech
        speech += pink * math.sqrt(speech_power / noise_power / 10 ** (room["snr_db"] / 10))
    low, high = PLENARY_HALL["band_hz"]  # the microphone hears speech and noise alike through its band
    band = 1.0 / np.sqrt(1.0 + (low / np.maximum(frequencies, 1.0)) ** 4) / np.sqrt(1.0 + (frequencies / high) ** 8)
    speech = np.fft.irfft(np.fft.rfft(speech, size) * band, size)[: waveform.size]
    speech *= peak / max(float(np.abs(speech).max()), 1e-12)
    return speech.astype(np.float32)


def render_clip(job: dict) -> dict:
    """Synthesize, add gain and noise, resample and encode one job; returns its duration and sentences."""
    waveform, rate, spoken = _speak(job)
    rng = np.random.default_rng(job["noise_seed"])
    waveform *= job["peak"] / max(float(np.abs(waveform).max()), 1e-6)
    speech_power = float(np.mean(waveform**2))
    noise_scale = math.sqrt(speech_power / 10 ** (job["snr_db"] / 10))  # white noise at the drawn SNR
    waveform += rng.standard_normal(waveform.size).astype(np.float32) * noise_scale
    common_voice = job["split"] not in _VOXPOPULI_SPLITS
    target_rate = LABELED_SAMPLING_RATE if common_voice else UNLABELED_SAMPLING_RATE
    waveform = soxr.resample(waveform, rate, target_rate)
    if job.get("room") is not None:
        waveform = far_field(waveform, target_rate, job["room"], rng)
    waveform = np.clip(waveform, -1.0, 1.0)
    if common_voice:
        soundfile.write(job["path"], waveform, target_rate, format="MP3")
    else:
        soundfile.write(job["path"], waveform, target_rate, format="OGG", subtype="VORBIS")
    result = {key: job[key] for key in ("language_index", "split", "index", "name", "client_id")}
    # The text of an unlabeled utterance is returned too but written nowhere (the audio is unlabeled).
    return dict(result, duration=waveform.size / target_rate, sentence=" ".join(job["texts"][:spoken]))


def render_chunk(jobs: list[dict]) -> list[dict]:
    """Render jobs in order, in this (fresh) process."""
    return [render_clip(job) for job in jobs]


def _chunks(jobs: list[dict]) -> list[list[dict]]:
    """Consecutive jobs with about CHUNK_SECONDS of expected audio each (a few seconds of work)."""
    chunks, current, seconds = [], [], 0.0
    for job in jobs:
        current.append(job)
        seconds += _FIRST_GUESS_SECONDS[UNLABELED if job["split"] in (UNLABELED, MIXED) else "labeled"]
        if seconds >= CHUNK_SECONDS:
            chunks.append(current)
            current, seconds = [], 0.0
    return chunks + ([current] if current else [])


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def _parameters(size: str, seed: int, voxpopuli_domain: str = "same") -> dict:
    parameters = {"size": size, "seed": seed, "corpus_version": DEMO_CORPUS_VERSION}
    if voxpopuli_domain != "same":  # corpora of the default domain keep the manifests they always had
        parameters["voxpopuli_domain"] = voxpopuli_domain
    return parameters


def _build_parts(build_dir: Path, size: str, seed: int, workers: int, voxpopuli_domain: str = "same") -> dict[tuple[int, str], list[dict]]:
    """Render every (language, split) up to its planned minutes; results keyed by (language index, split)."""
    plan = SIZES[size]
    targets = {}  # (language index, split) -> seconds wanted
    for language_index, language in enumerate(LANGUAGES):
        for split, minutes in plan[language.role].items():
            if split in TRANSCRIBED_SPLITS and voxpopuli_domain == "same":
                continue  # the transcribed VoxPopuli sets come with the hall
            if minutes > 0:
                targets[(language_index, split)] = minutes * 60.0
    for language_index in range(len(LANGUAGES)):  # after all others: the earlier splits' jobs come first
        targets[(language_index, MIXED)] = MIXED_MINUTES[size] * 60.0
    done: dict[tuple[int, str], list[dict]] = {key: [] for key in targets}

    def folder(language_index: int, split: str) -> Path:
        code = LANGUAGES[language_index].code
        if split == MIXED:
            return build_dir / MIXED_FOLDER / MIXED_LANGUAGE
        if split in TRANSCRIBED_SPLITS:
            return build_dir / VOXPOPULI_ASR_FOLDER / code
        return build_dir / ("voxpopuli" if split == UNLABELED else "cv") / code

    def next_jobs() -> list[dict]:
        # Rounds: guess how many clips fill what is missing; the clips' content depends only on their
        # index, and each round's size only on the previous rounds' durations, so the result is deterministic.
        jobs = []
        for (language_index, split), seconds in targets.items():
            results = done[(language_index, split)]
            missing = seconds - sum(r["duration"] for r in results)
            if missing <= 0:
                continue
            kind = UNLABELED if split in (UNLABELED, MIXED) else "labeled"
            mean = (sum(r["duration"] for r in results) / len(results)) if results else _FIRST_GUESS_SECONDS[kind]
            count = max(1, math.ceil(missing / mean * 1.02))
            jobs += [
                _make_job(seed, language_index, split, len(results) + offset, folder(language_index, split), voxpopuli_domain)
                for offset in range(count)
            ]
        return jobs

    progress = tqdm(desc=f"demo corpus ({size})", unit="clip", total=0)
    # eSpeak NG keeps state between utterances that no API call resets (pitch flutter, random noise:
    # the same text comes out a few samples longer or shorter after other text), so each chunk of jobs
    # is rendered in a fresh process. Chunks are fixed by the job list alone, hence the same corpus
    # whatever the number of workers. forkserver: a fresh process costs a fork of a preloaded server.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = context.Pool(max(1, workers), maxtasksperchild=1)
    try:
        jobs = next_jobs()
        while jobs:
            for job in jobs:
                Path(job["path"]).parent.mkdir(parents=True, exist_ok=True)
            progress.total += len(jobs)
            progress.refresh()
            # The mixed folder's jobs in chunks of their own: every other clip renders in the same process,
            # after the same clips, as before the folder existed (eSpeak's state), so it is bit-identical.
            # So do the transcribed VoxPopuli splits (version 4): the Common Voice clips are those of version 3.
            own = (MIXED, *TRANSCRIBED_SPLITS)
            chunks = _chunks([job for job in jobs if job["split"] not in own])
            chunks += _chunks([job for job in jobs if job["split"] in TRANSCRIBED_SPLITS]) + _chunks([job for job in jobs if job["split"] == MIXED])
            for chunk_results in pool.imap_unordered(render_chunk, chunks):
                for result in chunk_results:
                    done[(result["language_index"], result["split"])].append(result)
                progress.update(len(chunk_results))
            for results in done.values():
                results.sort(key=lambda r: r["index"])
            jobs = next_jobs()
    finally:
        pool.close()
        pool.join()
        progress.close()
    return done


def _write_common_voice_tables(build_dir: Path, done: dict) -> None:
    """train/dev/test/validated.tsv and clip_durations.tsv per language, in Common Voice's columns."""
    columns = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes",
               "age", "gender", "accents", "variant", "locale", "segment"]
    for language_index, language in enumerate(LANGUAGES):
        folder = build_dir / "cv" / language.code
        validated, durations = [], []
        for split in LABELED_SPLITS:
            rows = []
            for result in done.get((language_index, split), []):
                clip = Path(result["name"]).name
                rows.append({
                    "client_id": result["client_id"],
                    "path": clip,
                    "sentence_id": hashlib.sha256(result["sentence"].encode()).hexdigest()[:16],
                    "sentence": result["sentence"],
                    "sentence_domain": "", "up_votes": "2", "down_votes": "0", "age": "", "gender": "",
                    "accents": "", "variant": "", "locale": language.code, "segment": "",
                })
                durations.append((clip, round(result["duration"] * 1000)))
            _write_tsv(folder / f"{split}.tsv", columns, rows)
            validated += rows
        _write_tsv(folder / "validated.tsv", columns, validated)
        _write_tsv(folder / "clip_durations.tsv", ["clip", "duration[ms]"],
                   [{"clip": clip, "duration[ms]": str(ms)} for clip, ms in durations])


def _write_voxpopuli_asr_tables(build_dir: Path, done: dict) -> None:
    """`voxpopuli_asr/<lang>/asr_{dev,test}.tsv` in VoxPopuli's columns, for each language with such clips."""
    for language_index, language in enumerate(LANGUAGES):
        for split, table in TRANSCRIBED_SPLITS.items():
            results = done.get((language_index, split), [])
            if not results:
                continue
            rows = [{
                "id": Path(result["name"]).stem,
                "raw_text": result["sentence"],
                "normalized_text": " ".join("".join(c for c in result["sentence"].lower() if c.isalpha() or c.isspace()).split()),
                "speaker_id": result["client_id"][:8], "split": table, "gender": "", "is_gold_transcript": "True", "accent": "None",
            } for result in results]  # fmt: skip
            _write_tsv(build_dir / VOXPOPULI_ASR_FOLDER / language.code / f"asr_{table}.tsv", VOXPOPULI_ASR_COLUMNS, rows)


ANSWER_KEY_COLUMNS = ["id", "path", "language", "duration", "sentence"]


def _answer_key_rows(done: dict, split: str, path_of) -> list[dict]:
    """The answer-key rows of `split`'s clips (the true language and text), sorted by path; `path_of(language,
    result)` is a clip's path relative to the table's folder."""
    rows = []
    for language_index, language in enumerate(LANGUAGES):
        for result in done.get((language_index, split), []):
            path = path_of(language, result)
            rows.append({"id": Path(path).stem, "path": path, "language": language.code,
                         "duration": f"{result['duration']:.3f}", "sentence": result["sentence"]})  # fmt: skip
    return sorted(rows, key=lambda row: row["path"])


def _write_answer_keys(build_dir: Path, done: dict) -> None:
    """The corpus's answer keys, tables that no recipe stage reads:
    - `voxpopuli_mixed/manifest.tsv`: the true language and text of each clip of the mixed folder, in name
      order (not grouped by language); the answer key of LID routing;
    - `voxpopuli/answer_key.tsv`: the true text of each unlabeled utterance; the answer key of the
      pseudo-labels, read only by the oracle topline (`slimipl.oracle_transcripts`, docs/design.md §5)."""
    mixed = _answer_key_rows(done, MIXED, lambda language, result: f"{MIXED_LANGUAGE}/{result['name']}")
    _write_tsv(build_dir / MIXED_FOLDER / MIXED_MANIFEST, ANSWER_KEY_COLUMNS, mixed)
    unlabeled = _answer_key_rows(done, UNLABELED, lambda language, result: f"{language.code}/{result['name']}")
    if unlabeled:
        _write_tsv(build_dir / "voxpopuli" / UNLABELED_ANSWER_KEY, ANSWER_KEY_COLUMNS, unlabeled)


def read_answer_key(path: str | os.PathLike) -> list[dict]:
    """The rows of an answer-key table (id, path, language, duration, sentence), duration as a float."""
    with open(path, encoding="utf-8", newline="") as table:
        rows = list(csv.DictReader(table, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"))
    for row in rows:
        row["duration"] = float(row["duration"])
    return rows


def unlabeled_answer_key_path(unlabeled_root: str | os.PathLike) -> Path:
    """`<unlabeled root>/answer_key.tsv` (the demo corpus's `voxpopuli/answer_key.tsv`), with an error naming
    the fix when it is not there."""
    path = Path(unlabeled_root) / UNLABELED_ANSWER_KEY
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the oracle topline needs the true transcripts of the unlabeled audio there (a TSV "
            f"with id and sentence columns). The demo corpus has it from DEMO_CORPUS_VERSION 4 on: rebuild an older one "
            f"(delete its folder); for other data write one"
        )
    return path


def read_mixed_manifest(corpus_dir: str | os.PathLike) -> list[dict]:
    """The rows of a corpus's `voxpopuli_mixed/manifest.tsv` (id, path, language, duration, sentence), for
    scoring LID routing; give the corpus folder, its `voxpopuli_mixed/` folder or the file itself."""
    folder = Path(corpus_dir)
    if folder.is_file():
        path = folder
    else:
        path = folder / MIXED_MANIFEST if (folder / MIXED_MANIFEST).is_file() else folder / MIXED_FOLDER / MIXED_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: build the demo corpus with DEMO_CORPUS_VERSION >= 3 (scripts/make_demo_corpus.py), "
            f"or give the folder that holds {MIXED_MANIFEST}"
        )
    return read_answer_key(path)


def _write_tsv(path: Path, columns: list[str], rows: Iterable[dict]) -> None:
    with atomic_writer(path, newline="") as output:
        writer = csv.DictWriter(output, fieldnames=columns, delimiter="\t", quoting=csv.QUOTE_NONE,
                                lineterminator="\n", escapechar="\\")
        writer.writeheader()
        writer.writerows(rows)


def _versions() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "espeak-ng": espeak_synthesizer().version,
        "espeakng-loader": version("espeakng-loader"),
        "wordfreq": version("wordfreq"),
        "libsndfile": soundfile.__libsndfile_version__,
        "soxr": version("soxr"),
        "numpy": np.__version__,
    }


def _manifest(done: dict, size: str, seed: int, build_seconds: float, voxpopuli_domain: str = "same") -> dict:
    languages = {}
    for language_index, language in enumerate(LANGUAGES):
        hours, clips = {}, {}
        for split in (*LABELED_SPLITS, UNLABELED, *(TRANSCRIBED_SPLITS if voxpopuli_domain != "same" else ())):
            results = done.get((language_index, split), [])
            hours[split] = round(sum(r["duration"] for r in results) / 3600.0, 4)
            clips[split] = len(results)
        languages[language.code] = {
            "script": language.script.capitalize(),
            "role": language.role,
            "hours": hours,
            "clips": clips,
            "labeled_path": f"cv/{language.code}",
            "unlabeled_path": f"voxpopuli/{language.code}" if clips[UNLABELED] else None,
        }
        if voxpopuli_domain != "same":
            languages[language.code]["transcribed_path"] = f"{VOXPOPULI_ASR_FOLDER}/{language.code}" if clips["vp_test"] else None
    mixed = [result for language_index in range(len(LANGUAGES)) for result in done.get((language_index, MIXED), [])]
    scripts = {}
    for language in LANGUAGES:
        scripts.setdefault(language.script.capitalize(), []).append(language.code)
    layout = {
        "labeled": "cv/<lang>/clips/*.mp3 (48 kHz mono) + train/dev/test/validated/clip_durations.tsv",
        "unlabeled": f"voxpopuli/<lang>/<year>/*.ogg (16 kHz mono vorbis, 10-30 s) + voxpopuli/{UNLABELED_ANSWER_KEY} (true text per utterance)",
        "mixed": f"{MIXED_FOLDER}/{MIXED_LANGUAGE}/<year>/*.ogg (as unlabeled; every language, language unknown) "
        f"+ {MIXED_FOLDER}/{MIXED_MANIFEST} (true language and text per clip)",
    }
    extra = {}
    if voxpopuli_domain == "plenary_hall":
        layout["unlabeled"] += ", through the plenary hall"
        layout["transcribed"] = (
            f"{VOXPOPULI_ASR_FOLDER}/<lang>/asr_{{dev,test}}.tsv + <lang>/<year>/<id>.ogg (VoxPopuli's ASR layout; one "
            "sentence per segment, through the plenary hall; the languages with unlabeled audio)"
        )
        extra["plenary_hall"] = {key: list(value) for key, value in PLENARY_HALL.items()}
    return {
        "parameters": _parameters(size, seed, voxpopuli_domain),
        "languages": languages,
        "scripts": scripts,
        "layout": layout,
        **extra,
        # Totals only: the languages of its clips are in the manifest.tsv beside them, which the recipe never reads.
        "mixed": {"path": MIXED_FOLDER, "clips": len(mixed), "hours": round(sum(r["duration"] for r in mixed) / 3600.0, 4),
                  "manifest": f"{MIXED_FOLDER}/{MIXED_MANIFEST}"},  # fmt: skip
        "generators": _versions(),
        "licenses": LICENSES,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(build_seconds, 1),
    }


def read_manifest(corpus_dir: str | os.PathLike) -> dict | None:
    """The corpus's manifest, or None if there is no complete corpus there."""
    path = Path(corpus_dir) / "manifest.json"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as manifest:
        return json.load(manifest)


def make_demo_corpus(out_dir: str | os.PathLike, size: str = "default", seed: int = 0, *, workers: int = 2,
                     force: bool = False, voxpopuli_domain: str = "same") -> Path:
    """Build the demo corpus into `out_dir` (or keep the one there if it was built with the same parameters).

    Args:
        out_dir: where the corpus goes: `cv/`, `voxpopuli/`, `voxpopuli_asr/`, `voxpopuli_mixed/` and `manifest.json`.
        size: "default" (~3.7 h labeled + 2 h unlabeled; about 3 minutes on 2 cores) or "tiny" (a few
            clips per split and language; seconds).
        seed: all text, voices and noise derive from it; the same seed gives the same TSVs and durations.
        workers: processes rendering clips at the same time (the corpus does not depend on it).
        force: rebuild even if a complete corpus with the same parameters exists.
        voxpopuli_domain: "same" (the VoxPopuli part sounds like the Common Voice part) or "plenary_hall"
            (it goes through `far_field`, and `voxpopuli_asr/` holds transcribed dev/test sets in the hall).

    Returns:
        `out_dir` as a Path.
    """
    if size not in SIZES:
        raise ValueError(f"size={size!r}; choose one of {sorted(SIZES)}")
    if voxpopuli_domain not in VOXPOPULI_DOMAINS:
        raise ValueError(f"voxpopuli_domain={voxpopuli_domain!r}; choose one of {list(VOXPOPULI_DOMAINS)}")
    out_dir = Path(out_dir)
    existing = read_manifest(out_dir)
    if not force and existing is not None and existing.get("parameters") == _parameters(size, seed, voxpopuli_domain):
        return out_dir
    start = time.perf_counter()
    with atomic_directory(out_dir) as build_dir:
        done = _build_parts(build_dir, size, seed, workers, voxpopuli_domain)
        _write_common_voice_tables(build_dir, done)
        _write_voxpopuli_asr_tables(build_dir, done)
        _write_answer_keys(build_dir, done)
        manifest = _manifest(done, size, seed, time.perf_counter() - start, voxpopuli_domain)
        # Written last, as the marker of a complete corpus.
        write_json_atomically(build_dir / "manifest.json", manifest)
    return out_dir


__all__ = [
    "DEMO_CORPUS_VERSION",
    "LANGUAGES",
    "LICENSES",
    "MIXED_FOLDER",
    "MIXED_LANGUAGE",
    "MIXED_MANIFEST",
    "UNLABELED_ANSWER_KEY",
    "MIXED_MINUTES",
    "PLENARY_HALL",
    "TRANSCRIBED_SPLITS",
    "VOXPOPULI_ASR_FOLDER",
    "VOXPOPULI_DOMAINS",
    "SIZES",
    "DemoLanguage",
    "EspeakSynthesizer",
    "espeak_synthesizer",
    "far_field",
    "make_demo_corpus",
    "make_sentence",
    "read_manifest",
    "read_answer_key",
    "read_mixed_manifest",
    "unlabeled_answer_key_path",
    "render_chunk",
    "render_clip",
    "vocabulary",
]
