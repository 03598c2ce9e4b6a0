"""Seconds of compute per GRID sentence for each voice, and the real-time factor.

Usage: python benchmarks/speech.py [n_sentences]
"""

import sys
import time

import numpy as np

from opflowtalker.corpus.sentences import sample_sentences
from opflowtalker.corpus.speech import SAMPLE_RATE, list_voices, synthesize


def main(n: int = 20) -> None:
    sentences = sample_sentences(n, seed=123)
    print(f"{'voice':26s} {'s/sentence':>10s} {'audio s':>8s} {'RTF':>6s}  (first call, with loading: s)")
    for voice in list_voices():
        start = time.perf_counter()
        synthesize(sentences[0].spoken, voice)
        first = time.perf_counter() - start
        times, seconds = [], []
        for sentence in sentences:
            start = time.perf_counter()
            wav, _ = synthesize(sentence.spoken, voice)
            times.append(time.perf_counter() - start)
            seconds.append(len(wav) / SAMPLE_RATE)
        mean = float(np.mean(times))
        print(f"{voice.name:26s} {mean:10.3f} {np.mean(seconds):8.2f} {mean / np.mean(seconds):6.3f}  ({first:.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
