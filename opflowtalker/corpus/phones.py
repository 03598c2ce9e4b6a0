"""Phones: the 39 ARPAbet phones (lower case, no stress) and silence, and the IPA that espeak-ng
writes for English (which both speech engines phonemise with) turned into them. One table serves
both engines, so a phone means the same mouth shape whichever voice spoke it."""
from __future__ import annotations

import unicodedata
from typing import NamedTuple

import numpy as np

__all__ = ["ARPABET", "SILENCE", "PHONE_SET", "VOWELS", "BILABIALS", "Phone", "IPA_UNITS", "MAX_UNIT", "STRESS",
           "MODIFIERS", "PAUSES", "bare_ipa", "ipa_to_arpabet", "spread"]

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


# IPA (as espeak-ng writes English) to ARPAbet.
#
# Accents differ in vowels that ARPAbet cannot tell apart; each maps to the
# closest US vowel, which is also what sets the mouth shape. Non-rhotic
# centring diphthongs ("ear", "air" in RP) become vowel + ah, not vowel + r,
# because no r is spoken.

IPA_UNITS: dict[str, tuple[str, ...]] = {
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
MAX_UNIT = max(len(unit) for unit in IPA_UNITS)
STRESS = frozenset("ˈˌ")
# Marks that change how a sound is said but not which phone it is; they are
# spelled after the letter they modify, so they join the preceding phone.
MODIFIERS = frozenset("ːˑʲʰʷ˞̃") | {chr(c) for c in range(0x0300, 0x0370)}
PAUSES = frozenset(".,;:!?…—-()\"'^$_")


# Long close-mid vowels are Scottish and Northern English monophthongs of
# FACE and GOAT; stripping the length mark would turn them into other vowels.
_LONG_VOWELS = {"eː": "eɪ", "oː": "oʊ", "aː": "ɑ"}


def bare_ipa(ipa: str) -> str:
    ipa = unicodedata.normalize("NFD", ipa)
    for long_vowel, diphthong in _LONG_VOWELS.items():
        ipa = ipa.replace(long_vowel, diphthong)
    return "".join(ch for ch in ipa if ch not in STRESS and ch not in MODIFIERS and ch not in "‍͡")


def ipa_to_arpabet(ipa: str) -> list[str]:
    """ARPAbet phones for one IPA string as espeak-ng writes English ("ˈaʊ" -> ["aw"])."""
    bare = bare_ipa(ipa)
    phones: list[str] = []
    i = 0
    while i < len(bare):
        for size in range(min(MAX_UNIT, len(bare) - i), 0, -1):
            unit = IPA_UNITS.get(bare[i:i + size])
            if unit is not None:
                phones.extend(unit)
                i += size
                break
        else:
            raise ValueError(f"The IPA symbol '{bare[i]}' in '{ipa}' has no ARPAbet equivalent.")
    return phones


def spread(phones: list[str], start: int, end: int) -> list[tuple[str, int, int]]:
    """Share a span evenly among the phones that one IPA unit stands for."""
    edges = np.linspace(start, end, len(phones) + 1).round().astype(int)
    return [(p, int(a), int(b)) for p, a, b in zip(phones, edges[:-1], edges[1:])]

