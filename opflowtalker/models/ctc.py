"""Reading CTC output: the best path (greedy), or the best sentence of a grammar (one word of each
slot, in order), as a recogniser with a task grammar reads GRID."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .mouths import LipReaderError

if TYPE_CHECKING:
    from .lipreader import LipReaderConfig

__all__ = ["BLANK", "greedy_decode", "grammar_decode", "decode"]

BLANK = 0
"""Index of the CTC blank; token i of the vocabulary is class i + 1."""


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None,
                  config: LipReaderConfig | None = None) -> list[str]:
    """Best-path CTC decoding of (B, T, V) log-probabilities: the most likely class per frame,
    repeats collapsed, then blanks dropped ("a a _ a b b" -> "a a b"), as text of ``config``'s
    tokens (the default config when None)."""
    config = config or LipReaderConfig()
    if log_probs.ndim != 3 or log_probs.shape[-1] != config.n_classes:
        raise LipReaderError(f"log-probabilities must be shaped (B, T, {config.n_classes}), not {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu().numpy()
    lengths = np.full(len(best), best.shape[1]) if lengths is None else lengths.cpu().numpy()
    texts = []
    for path, n in zip(best, lengths):
        path = path[: int(n)]
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        texts.append(config.decode([int(c) for c in path[keep] if c != BLANK]))
    return texts


def _grammar_lattice(config: LipReaderConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """The CTC lattice of a slot grammar: a blank state before, between and after the slots and one
    state per word of each slot. Returns each state's class, the (N, N) log transition matrix
    (0 allowed, -inf not), the start and end masks, and each state's word (None for blanks)."""
    index = {token: i + 1 for i, token in enumerate(config.token_list)}
    classes, words, slot_of = [BLANK], [None], [0]
    for j, slot in enumerate(config.grammar, start=1):
        for word in slot:
            classes.append(index[word]); words.append(word); slot_of.append(j)
        classes.append(BLANK); words.append(None); slot_of.append(j)
    n = len(classes)
    slot_of, classes = np.array(slot_of), np.array(classes)
    is_blank = np.array([w is None for w in words])
    allowed = np.eye(n, dtype=bool)  # stay: a blank stays blank, a word repeats
    for a in range(n):
        for b in range(n):
            if is_blank[a] and not is_blank[b] and slot_of[b] == slot_of[a] + 1:
                allowed[a, b] = True  # blank before slot j+1 -> a word of slot j+1
            elif not is_blank[a] and is_blank[b] and slot_of[b] == slot_of[a]:
                allowed[a, b] = True  # a word -> the blank after its slot
            elif (not is_blank[a] and not is_blank[b] and slot_of[b] == slot_of[a] + 1
                  and classes[a] != classes[b]):
                allowed[a, b] = True  # straight on to a different word of the next slot
    last = len(config.grammar)
    start = (slot_of == 0) | (~is_blank & (slot_of == 1))
    end = (is_blank & (slot_of == last)) | (~is_blank & (slot_of == last))
    return classes, np.where(allowed, 0.0, -np.inf), start, end, words


def grammar_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None,
                   config: LipReaderConfig | None = None) -> list[str]:
    """The best CTC path that reads as a sentence of ``config.grammar`` (one word from each slot
    in order): Viterbi decoding through the grammar's lattice, so that every reading is a
    sentence of the corpus's grammar, as a recogniser with a task grammar reads GRID."""
    config = config or LipReaderConfig()
    if not config.grammar:
        raise LipReaderError("grammar decoding needs a lip reader configured with a grammar")
    if log_probs.ndim != 3 or log_probs.shape[-1] != config.n_classes:
        raise LipReaderError(f"log-probabilities must be shaped (B, T, {config.n_classes}), not {tuple(log_probs.shape)}")
    classes, transition, start, end, words = _grammar_lattice(config)
    scores = log_probs.detach().float().cpu().numpy()
    lengths = np.full(len(scores), scores.shape[1]) if lengths is None else lengths.cpu().numpy()
    texts = []
    for frames, n in zip(scores, lengths):
        emit = frames[: int(n)][:, classes]  # (T, N)
        delta = np.where(start, emit[0], -np.inf)
        back = np.zeros((len(emit), len(classes)), dtype=np.int64)
        for t in range(1, len(emit)):
            candidates = delta[:, None] + transition  # (from, to)
            back[t] = candidates.argmax(axis=0)
            delta = candidates.max(axis=0) + emit[t]
        state = int(np.argmax(np.where(end, delta, -np.inf)))
        path = [state]
        for t in range(len(emit) - 1, 0, -1):
            state = int(back[t, state])
            path.append(state)
        path.reverse()
        read = [words[s] for i, s in enumerate(path) if words[s] is not None and (i == 0 or path[i - 1] != s)]
        texts.append(" ".join(read))
    return texts


def decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None,
           config: LipReaderConfig | None = None) -> list[str]:
    """What the reader reads: grammar decoding when its config has a grammar, else best-path."""
    config = config or LipReaderConfig()
    return grammar_decode(log_probs, lengths, config) if config.grammar else greedy_decode(log_probs, lengths, config)
