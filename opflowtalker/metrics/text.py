"""Lip-readability: text metrics between transcripts, and the paper's Visual Text Consistency Score.

The paper reads the lips of a video with a lip-reading model (T_gen for a generated video, T_gt
for the real one) and transcribes its audio with a speech recogniser (T_speech), then compares
the texts with BLEU, WER, CER and ROUGE-L (its Table 2). Here the hypothesis is always the
lip-read text and the reference the speech transcript. Every metric sees the texts normalised
the same way (:func:`normalize`: lower case, punctuation removed, single spaces), because the two
recognisers punctuate and capitalise differently and neither difference is a lip-reading error.

* **BLEU**: sacrebleu's sentence BLEU on the paper's 0..1 scale rather than sacrebleu's 0..100:
  the geometric mean of the 1- to 4-gram precisions times the brevity penalty, with orders that
  the hypothesis is too short for left out (effective order) and the k-th order without a match
  counted as 1 / (2**k * its n-gram count) (exponential smoothing).
* **WER / CER**: word and character error rates from jiwer (edits / reference length). jiwer
  counts each hypothesis word (or character) as an error against an empty reference.
* **ROUGE-L**: rouge-score's F-measure of the longest common word subsequence.
* **VTCS** (Eq. 9): (1/N) sum_i || M(T_gen_i, T_speech_i) - M(T_gt_i, T_speech_i) ||_2 with M BLEU
  (VTCS-B) or WER (VTCS-W). The scores are scalars, so the norm is an absolute value: VTCS is
  how far, on average, a generated video's lip-readability is from that of the real video of the
  same sentence, whichever way.

Scores over a test set (``mean_*``) are means of the sentence scores, each sentence counting
once whatever its length, which is not sacrebleu's corpus BLEU nor jiwer's pooled WER.
Two empty texts are identical: BLEU and ROUGE-L 1, WER and CER 0.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from functools import lru_cache

import jiwer
import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

from ..errors import OpFlowTalkerError

__all__ = [
    "TextMetricError",
    "normalize",
    "bleu",
    "wer",
    "cer",
    "rouge_l",
    "mean_bleu",
    "mean_wer",
    "mean_cer",
    "mean_rouge_l",
    "text_scores",
    "vtcs",
    "SENTENCE_METRICS",
]


class TextMetricError(OpFlowTalkerError, ValueError):
    """Texts that cannot be compared as asked; the message is one sentence for the user."""


DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def normalize(text: str) -> str:
    """Lower case, punctuation removed (apostrophes closing up, other marks as spaces), digits
    spelled out one by one, one space between words: ``"Don't stop—now!"`` -> ``"dont stop now"``,
    ``"Bin blue at F4"`` -> ``"bin blue at f four"``. A speech recogniser writes numbers as digits
    and a lip reader as words (GRID's digits are single words), and neither is an error."""
    if not isinstance(text, str):
        raise TextMetricError(f"expected a text, got {type(text).__name__}")
    chars = []
    for ch in unicodedata.normalize("NFKC", text).lower():
        if ch in "'\u2019":
            continue  # "don't" and "dont" are the same word to a listener
        if ch.isdigit() and ch.isascii():
            chars.append(f" {DIGIT_WORDS[int(ch)]} ")
            continue
        chars.append(" " if unicodedata.category(ch).startswith(("P", "S")) else ch)
    return " ".join("".join(chars).split())


def bleu(hyp: str, ref: str) -> float:
    """Sentence BLEU of ``hyp`` against ``ref`` in 0..1."""
    hyp, ref = normalize(hyp), normalize(ref)
    if not hyp and not ref:
        return 1.0
    # sacrebleu's identical-sentence score is 100 plus rounding; keep the 0..1 bounds exact.
    return float(np.clip(sacrebleu.sentence_bleu(hyp, [ref]).score / 100.0, 0.0, 1.0))


def wer(hyp: str, ref: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words."""
    return float(jiwer.wer(reference=normalize(ref), hypothesis=normalize(hyp)))


def cer(hyp: str, ref: str) -> float:
    """Character error rate, spaces included, on the normalised texts."""
    return float(jiwer.cer(reference=normalize(ref), hypothesis=normalize(hyp)))


class _Words:
    """rouge-score's own tokenizer drops every non-ASCII letter; the normalised words are used as they are."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split()


@lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Words())


def rouge_l(hyp: str, ref: str) -> float:
    """ROUGE-L F-measure: 2PR/(P+R) with P = LCS/hyp words and R = LCS/ref words."""
    hyp, ref = normalize(hyp), normalize(ref)
    if not hyp and not ref:
        return 1.0
    return float(_rouge().score(target=ref, prediction=hyp)["rougeL"].fmeasure)


SENTENCE_METRICS: dict[str, Callable[[str, str], float]] = {"bleu": bleu, "wer": wer, "cer": cer, "rouge_l": rouge_l}


def _pairs(name: str, *lists: Sequence[str]) -> None:
    lengths = {len(x) for x in lists}
    if len(lengths) != 1:
        raise TextMetricError(f"{name} needs lists of equal length, got lengths {[len(x) for x in lists]}")
    if lengths == {0}:
        raise TextMetricError(f"{name} needs at least one sentence")
    for texts in lists:
        if isinstance(texts, str):
            raise TextMetricError(f"{name} takes lists of sentences, not a single string")


def _mean(metric: Callable[[str, str], float], name: str, hyps: Sequence[str], refs: Sequence[str]) -> float:
    _pairs(name, hyps, refs)
    return float(np.mean([metric(h, r) for h, r in zip(hyps, refs)]))


def mean_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean sentence BLEU over a test set."""
    return _mean(bleu, "mean_bleu", hyps, refs)


def mean_wer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean sentence WER over a test set."""
    return _mean(wer, "mean_wer", hyps, refs)


def mean_cer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean sentence CER over a test set."""
    return _mean(cer, "mean_cer", hyps, refs)


def mean_rouge_l(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean sentence ROUGE-L F-measure over a test set."""
    return _mean(rouge_l, "mean_rouge_l", hyps, refs)


def text_scores(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """The four columns of the paper's Table 2 (BLEU, WER, CER, ROUGE-L), each a mean of sentence scores."""
    return {name: _mean(metric, name, hyps, refs) for name, metric in SENTENCE_METRICS.items()}


def vtcs(gen: Sequence[str], gt: Sequence[str], speech: Sequence[str], metric: str = "bleu") -> float:
    """Visual Text Consistency Score (Eq. 9): VTCS-B with ``metric="bleu"``, VTCS-W with ``"wer"``.

    ``gen``, ``gt``: lip-read texts of the generated and the real videos; ``speech``: the speech
    transcripts of their (shared) audio; one entry per test clip.
    """
    if metric not in ("bleu", "wer"):
        raise TextMetricError(f"VTCS is defined with metric 'bleu' or 'wer', not {metric!r}")
    _pairs("vtcs", gen, gt, speech)
    score = SENTENCE_METRICS[metric]
    return float(np.mean([abs(score(g, s) - score(t, s)) for g, t, s in zip(gen, gt, speech)]))
