"""espeak-ng through ctypes: formant speech in many accents, with phone boundaries on the sample.

``espeakng-loader`` ships libespeak-ng and its data. Each utterance loads the library afresh (see
:func:`speak`), so the same text, voice and seed give the same audio whatever was said before.
"""
from __future__ import annotations

import ctypes
import _ctypes
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.signal import butter, lfilter

from .phones import PAUSES, SILENCE, bare_ipa, ipa_to_arpabet, spread

if TYPE_CHECKING:
    from .speech import Voice

__all__ = ["speak"]

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


def speak(text: str, voice: Voice, seed: int) -> tuple[np.ndarray, int, list[tuple[str, int, int]]]:
    """One utterance: its audio, sample rate and ARPAbet spans (phone, start sample, end sample)."""
    audio, sample_rate, events, marks, silent = _synthesize(text, voice, seed)
    phonemes = _phoneme_starts(audio, sample_rate, events, _marks_of_events(marks, events), silent)
    return audio, sample_rate, _espeak_segments(phonemes, len(audio))


def _synthesize(text: str, voice: Voice, seed: int):
    """One utterance from a freshly loaded libespeak-ng: the audio, its sample rate, the PHONEME
    events (IPA name, sample), the output hooks' phoneme marks (mnemonic, sample, kind) and one
    flag per sample saying whether it is silence.

    espeak-ng's wave generator keeps state in C statics that no API resets
    (the pitch-flutter phase, the waveform phase, echo and breath filters),
    so the same text spoken twice in one process comes out different and
    depends on everything said before. Loading the library for each
    utterance and unloading it afterwards starts every utterance from the
    same state; it costs a few milliseconds. The library's whole life (load,
    configure, speak, unload, check it is gone) is one function because it is
    one critical section: another thread's utterance must not see it loaded.
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
    return audio, sample_rate, events, marks, np.frombuffer(bytes(silent), np.uint8)


def _marks_of_events(marks: list[tuple[str, int, int]], events: list[tuple[str, int]]) -> list[tuple[int, int]]:
    """The (sample, kind) mark where each PHONEME event's phoneme began processing."""
    begun = [(sample, kind) for mnemonic, sample, kind in marks if mnemonic != _END_OF_WORD]
    if len(begun) != len(events):
        # Some diphthongs are begun twice at the same sample (a second mark for their glide)
        # with a single PHONEME event: one mark per start is what the events describe.
        begun = [mark for i, mark in enumerate(begun) if i == 0 or mark != begun[i - 1]]
    if len(begun) != len(events):
        # Unpaired marks: keep the synthesiser's event times and skip the refinements that
        # need a mark's kind and closure sample; the timings are then the events' own.
        begun = [(at_event, -1) for _, at_event in events]
    return begun


def _phoneme_starts(audio: np.ndarray, sample_rate: int, events: list[tuple[str, int]],
                    begun: list[tuple[int, int]], flags: np.ndarray) -> list[tuple[str, int]]:
    """Where each phoneme starts, on the sample: the event's time, moved to the mark for a closure,
    to the release heard for a vowel after a nasal or liquid, to the first silent sample for a
    pause, and to the spectral turn for a liquid or nasal played within a vowel."""
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
    return phonemes


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
        bare = bare_ipa(name)
        if not bare or all(ch in PAUSES for ch in bare):
            segments.append((SILENCE, start, end))
        else:
            segments.extend(spread(ipa_to_arpabet(bare), start, end))
    return segments

