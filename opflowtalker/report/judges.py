"""Can we trust the judges? The control rows (``metrics/controls``) against the bounds a judge must meet
before the study trusts it, and the bounds a generator is held to against the same controls."""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ..tables import format_cell
from .comparisons import bound_lines, paired_difference

__all__ = ["judge_calibration_table", "judge_bounds", "LIP_METRICS", "lip_sync_bounds", "speech_by_voice"]


def judge_calibration_table(controls: Mapping[str, Mapping]) -> pd.DataFrame:
    """One line per control row: what the sync judge, the lip reader and the recogniser give it,
    each mean with its 95% interval over the test clips."""
    lines = {}
    for row in controls.values():
        lines[row["label"]] = {
            "LSE-C ↑": format_cell(row, "lse_c"), "LSE-D ↓": format_cell(row, "lse_d"),
            "expected offset": row["expected_offset"],
            "clips with the best offset within ±1 of it": f"{100 * row['offset_ok']:.0f}%",
            "lip reader WER vs script": format_cell(row, "wer_script"),
            "lip reader WER vs T_speech": format_cell(row, "wer")}
    return pd.DataFrame.from_dict(lines, orient="index")


def judge_bounds(controls: Mapping[str, Mapping]) -> pd.DataFrame:
    """Each bound a judge must meet before the study trusts it, the measured value and whether it is
    met: the sync judge's offsets and its LSE-C against the still and wrong-audio controls, the lip
    reader on the real and the still video, the speech recogniser against the script."""
    truth, still, wrong, moved = (controls[k] for k in ("ground_truth", "still_reference", "wrong_audio",
                                                          "shifted_audio"))
    checks = [
        ("sync judge: real clips with the best offset within ±1 of 0", truth["offset_ok"], ">=", 0.90),
        (f"sync judge: shifted clips with the best offset within ±1 of {moved['expected_offset']}",
         moved["offset_ok"], ">=", 0.90),
        ("sync judge: LSE-C of the real video / the still reference", truth["lse_c"] / max(still["lse_c"], 1e-12),
         ">=", 3.0),
        ("sync judge: LSE-C of the real video / wrong audio", truth["lse_c"] / max(wrong["lse_c"], 1e-12), ">=", 3.0),
        ("lip reader: WER of the real video against the script", truth["wer_script"], "<=", 0.20),
        ("lip reader: WER of the still reference against the script", still["wer_script"], ">=", 0.75),
        ("speech recogniser: WER against the script", truth["speech_wer_vs_script"], "<=", 0.10),
    ]
    lines = bound_lines(checks)
    return pd.DataFrame(lines).set_index("claim")


# Columns on which a generator must do better than the still reference, with their direction. Not
# the motion in silence: there a still frame is close to ideal, and the bound is the real video's.
LIP_METRICS = {"lse_c": True, "lse_d": False, "offset_ok": True, "m_lmd": False, "wer_script": False}


def lip_sync_bounds(rows: Mapping[str, Mapping], variant: str) -> pd.DataFrame:
    """The lip-sync bounds a generator ``variant`` is held to on the held-out test clips, measured
    against the control rows of the same run: lip reading within 0.25 of the real video's WER, LSE-C
    at least half the real video's, the best offset right on at least 70% of clips, the mouth in
    silence moving at most 1.5 times as much as the real one, and every lip metric better than the
    still reference (paired interval excluding zero)."""
    row, truth, still = rows[variant], rows["ground_truth"], rows["still_reference"]
    checks = [
        ("lip-reading WER against the script - the real video's", row["wer_script"] - truth["wer_script"], "<=", 0.25),
        ("LSE-C / the real video's", row["lse_c"] / max(truth["lse_c"], 1e-12), ">=", 0.5),
        ("clips with the best offset within ±1 of 0", row["offset_ok"], ">=", 0.7),
        ("motion in silence / the real video's", row["silence_motion"] / max(truth["silence_motion"], 1e-12),
         "<=", 1.5),
    ]
    lines = bound_lines(checks)
    for key, higher in LIP_METRICS.items():
        paired = paired_difference(row, still, key)
        if paired is None:
            continue
        diff, lo, hi = paired
        better = lo > 0 if higher else hi < 0
        lines.append({"claim": f"{key} better than the still reference (paired difference, 95% interval)",
                      "measured": f"{diff:+.3g} [{lo:+.3g}, {hi:+.3g}]", "bound": "excludes 0, right side",
                      "met": bool(better)})
    return pd.DataFrame(lines).set_index("claim")


def speech_by_voice(truth: Mapping) -> pd.DataFrame:
    """The speech recogniser's WER against the script, per voice of the test clips (and overall)."""
    from ..metrics.speech import recognition_by_voice

    spoken = truth["speech_per_clip"]
    rows = list(zip(spoken["voice"], spoken["script"], spoken["speech"]))
    clips = pd.Series(spoken["voice"]).value_counts()
    table = pd.DataFrame({"clips": clips, "WER": pd.Series(recognition_by_voice(rows))}).sort_index()
    table.loc["all voices"] = [len(rows), recognition_by_voice([("all", s, t) for _, s, t in rows])["all"]]
    table["clips"] = table["clips"].astype(int)
    return table.rename_axis("voice").round(3)

