"""Training as the chapters show it: loss terms and validation scores of several runs on one step
axis, whether each judge beats chance, and the wall time of each stage."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .comparisons import ReportError
from ..stages import PIPELINE_ORDER

__all__ = ["training_curves", "eval_curves", "lipreader_verdict", "syncnet_verdict", "stage_minutes",
           "sync_judge_verdict", "expert_calibration"]


def _curve_frame(series: dict[str, pd.Series], what: str) -> pd.DataFrame:
    if not series:
        raise ReportError(f"no training log records {what}")
    return pd.DataFrame(series).sort_index().rename_axis("step")


def training_curves(logs: Mapping[str, Mapping], term: str) -> pd.DataFrame:
    """One column per log that records the loss term ``term`` (e.g. ``"l1"``, ``"sync"``,
    ``"ofs"``), indexed by step; logs without the term are left out, other steps are NaN."""
    series = {}
    for name, log in logs.items():
        history = log["history"]
        if term in history:
            series[name] = pd.Series(history[term], index=history["step"], dtype=float)
    return _curve_frame(series, f"the term {term!r}")


def eval_curves(logs: Mapping[str, Mapping], key: str) -> pd.DataFrame:
    """Like :func:`training_curves` for a validation score logged by ``fit``'s ``evaluate``."""
    series = {}
    for name, log in logs.items():
        points = [(e["step"], e[key]) for e in log["history"].get("eval", []) if key in e]
        if points:
            steps, values = zip(*points)
            series[name] = pd.Series(values, index=steps, dtype=float)
    return _curve_frame(series, f"the validation score {key!r}")


def lipreader_verdict(log: Mapping) -> str:
    """Markdown: the lip reader's test WER/CER beside reading without looking (the commonest
    sentence, and random words), and whether it beats both."""
    test, chance = log["test"], log["chance"]
    floor = min(chance["majority_wer"], chance["random_wer"])
    beats = test["wer"] < floor
    verdict = ("It reads better than chance, so the lip-readability metrics (Table 2) carry signal."
               if beats else
               "It reads no better than chance, so the lip-readability metrics (Table 2) cannot tell the "
               "generators apart on this run; their differences are noise.")
    return (f"On the {test['n']} held-out test clips the lip reader's WER is {test['wer']:.3f} and its CER "
            f"{test['cer']:.3f}, reading {100 * test['sentence_accuracy']:.0f}% of the sentences exactly. "
            f"Always answering the commonest sentence (\"{chance['majority_sentence']}\") scores WER "
            f"{chance['majority_wer']:.3f} (CER {chance['majority_cer']:.3f}); random words in the right "
            f"places score WER {chance['random_wer']:.3f} (CER {chance['random_cer']:.3f}). {verdict}")


def syncnet_verdict(log: Mapping, chance: float = 0.5) -> str:
    """Markdown: the SyncNet expert's final validation accuracy on its balanced in/out-of-sync
    pairs (chance 0.5), and what follows for L_sync and LSE."""
    evals = log["history"].get("eval") or []
    if not evals or "accuracy" not in evals[-1]:
        raise ReportError("the SyncNet log holds no validation accuracy")
    last = evals[-1]
    beats = last["accuracy"] > chance
    verdict = ("It tells synced from shifted audio better than chance, so L_sync and LSE-C/D measure sync."
               if beats else
               "It does no better than chance, so L_sync and LSE-C/D say nothing about sync on this run.")
    return (f"After {last['step']} steps the expert classifies {100 * last['accuracy']:.1f}% of the held-out "
            f"pairs correctly (chance: {100 * chance:.0f}%; BCE {last['bce']:.3f}). {verdict}")


def stage_minutes(times: Mapping[str, Mapping]) -> pd.DataFrame:
    """``metrics/stage_times.json`` as minutes per stage, in the order the pipeline runs them;
    columns ``command`` (the stage's command, e.g. ``train-generator``), ``half`` (``"LRS2-shaped"``,
    or ``"HDTF-shaped"`` for a stage run with ``--hd``, recorded as ``"hd <stage>"``) and ``minutes``."""
    if not times:
        raise ReportError("the stage-times file lists no stages")
    rank = {command: i for i, command in enumerate(PIPELINE_ORDER)}
    rows = []
    for stage, entry in times.items():
        words = stage.split()
        half = "HDTF-shaped" if words[0] == "hd" and len(words) > 1 else "LRS2-shaped"
        command = words[1] if half == "HDTF-shaped" else words[0]
        rows.append((half != "LRS2-shaped", rank.get(command, len(rank)), stage, command, half,
                     float(entry["seconds"]) / 60))
    rows.sort()
    return pd.DataFrame([r[2:] for r in rows], columns=["stage", "command", "half", "minutes"]).set_index("stage")


def sync_judge_verdict(log: Mapping, shift: int) -> str:
    """Markdown: the sync judge's calibration on the validation clips (seen faces, unseen sentences),
    the shifted audio delayed by ``shift`` frames (``train_sync_judge.eval_shift``)."""
    val = log.get("val")
    if not val:
        raise ReportError("the sync judge's log holds no validation calibration")
    return (f"After {log['steps']} steps ({log['seconds'] / 60:.1f} min) the sync judge finds the true offset "
            f"within one frame on {100 * val['offset_within_1']:.0f}% of the {val['clips']} validation clips, and "
            f"the offset of audio delayed by {val.get('shift', shift)} frames on "
            f"{100 * val['shifted_offset_within_1']:.0f}%; their mean LSE-C is {val['lse_c']:.3f} "
            f"(LSE-D {val['lse_d']:.3f}) on a distance scale of 0 to 2 (unit-norm embeddings).")


def expert_calibration(truth: Mapping) -> str:
    """Markdown: how the training expert (SyncNet) would do as a judge, on the real and shifted clips."""
    expert = (truth.get("calibration") or {}).get("expert")
    if not expert:
        raise ReportError("the ground-truth row holds no calibration of the training expert")
    offsets, moved = np.asarray(expert["offset"]), np.asarray(expert["offset_shifted"])
    shift = expert["shift"]
    return (f"The training expert (Wav2Lip's SyncNet, the teacher of L_sync) put through the same offset search: "
            f"the best offset is within one frame of 0 on {100 * np.mean(np.abs(offsets) <= 1):.0f}% of the real "
            f"test clips and within one frame of {-shift} on {100 * np.mean(np.abs(moved + shift) <= 1):.0f}% of the "
            f"shifted ones, mean LSE-C {np.mean(expert['lse_c']):.3f}.")

