"""GRID-style sentences: the six-slot grammar of the GRID audio-visual corpus.

Every sentence is ``command colour preposition letter digit adverb``, e.g.
"bin blue at f two now". The grammar has 4 * 4 * 4 * 25 * 10 * 4 = 64,000
sentences; a corpus samples a distinct subset of them from a seed.

The written form keeps GRID's transcript convention (a letter is the bare
lower-case letter); the spoken form writes the letter so that a
text-to-speech engine says the letter's name ("F", and "eh" for "a", which
would otherwise be read as the article).

Splits are made per sentence, not per utterance: a held-out test sentence is
never spoken in train or val by any voice. A sentence's split is a function
of its text alone (a salted hash), so it does not change when the corpus
grows or is re-sampled with another seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

COMMANDS = ("bin", "lay", "place", "set")
COLOURS = ("blue", "green", "red", "white")
PREPOSITIONS = ("at", "by", "in", "with")
LETTERS = tuple("abcdefghijklmnopqrstuvxyz")  # GRID leaves out "w"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ADVERBS = ("again", "now", "please", "soon")

SLOTS = (COMMANDS, COLOURS, PREPOSITIONS, LETTERS, DIGITS, ADVERBS)
GRAMMAR_SIZE = int(np.prod([len(slot) for slot in SLOTS]))

# What to give a synthesiser for each letter so that it says the letter's
# name. A capital letter on its own is read as its name by espeak-ng (the
# phonemiser of every voice here), in the voice's accent ("zee" or "zed"),
# except "A", which is read as the article; "eh" is read as its name.
SPOKEN_LETTERS = {letter: letter.upper() for letter in LETTERS} | {"a": "eh"}

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, order=True)
class Sentence:
    command: str
    colour: str
    preposition: str
    letter: str
    digit: str
    adverb: str

    @property
    def words(self) -> tuple[str, ...]:
        return (self.command, self.colour, self.preposition, self.letter, self.digit, self.adverb)

    @property
    def text(self) -> str:
        """The GRID transcript: "bin blue at f two now"."""
        return " ".join(self.words)

    @property
    def spoken(self) -> str:
        """The text to give a speech synthesiser: "bin blue at F two now"."""
        words = list(self.words)
        words[3] = SPOKEN_LETTERS[self.letter]
        return " ".join(words)

    @property
    def index(self) -> int:
        """Position of the sentence in the grammar, 0 <= index < GRAMMAR_SIZE."""
        index = 0
        for slot, word in zip(SLOTS, self.words):
            index = index * len(slot) + slot.index(word)
        return index

    @classmethod
    def from_index(cls, index: int) -> "Sentence":
        if not 0 <= index < GRAMMAR_SIZE:
            raise ValueError(f"A sentence index must lie in [0, {GRAMMAR_SIZE}), got {index}.")
        words = []
        for slot in reversed(SLOTS):
            index, position = divmod(index, len(slot))
            words.append(slot[position])
        return cls(*reversed(words))

    @classmethod
    def from_text(cls, text: str) -> "Sentence":
        words = text.split()
        if len(words) != len(SLOTS) or any(w not in slot for w, slot in zip(words, SLOTS)):
            raise ValueError(f"'{text}' is not a sentence of the GRID grammar.")
        return cls(*words)


class Splits(NamedTuple):
    train: list[Sentence]
    val: list[Sentence]
    test: list[Sentence]


def sample_sentences(n: int, seed: int = 0) -> list[Sentence]:
    """Draw `n` distinct sentences uniformly from the grammar, the same ones for the same seed."""
    if not 0 < n <= GRAMMAR_SIZE:
        raise ValueError(f"The grammar has {GRAMMAR_SIZE} sentences, so n must lie in [1, {GRAMMAR_SIZE}], got {n}.")
    rng = np.random.default_rng(seed)
    indices = rng.choice(GRAMMAR_SIZE, size=n, replace=False)
    return [Sentence.from_index(int(i)) for i in indices]


def split_of(sentence: Sentence, val_fraction: float = 0.1, test_fraction: float = 0.1, salt: str = "grid") -> str:
    """The split ("train", "val" or "test") that a sentence belongs to.

    A hash of the text, not a random draw, decides it, so the assignment is the same
    in every corpus that contains the sentence.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError("val_fraction and test_fraction must be non-negative and sum to less than 1.")
    digest = hashlib.sha256(f"{salt}:{sentence.text}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def split_sentences(
    sentences: Sequence[Sentence], val_fraction: float = 0.1, test_fraction: float = 0.1, salt: str = "grid"
) -> Splits:
    """Partition sentences into train/val/test, keeping their order within each split."""
    parts: dict[str, list[Sentence]] = {name: [] for name in SPLITS}
    for sentence in sentences:
        parts[split_of(sentence, val_fraction, test_fraction, salt)].append(sentence)
    return Splits(parts["train"], parts["val"], parts["test"])
