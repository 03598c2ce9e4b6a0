"""Tables 1-3 of the paper from the evaluation JSONs, with the paper's reported rows beside ours.

Our rows come from ``metrics/generators/<variant>.json`` (written by ``opflowtalker evaluate``) and
the control rows from ``metrics/controls/<control>.json`` (``opflowtalker evaluate-reference``,
the same scoring function); each cell of ours carries its 95% bootstrap interval over the test
clips, and each row its per-clip values for paired comparisons. The paper's are :data:`PAPER`, copied from its Tables 1-3 (LRS2) and always labelled "reported by
the paper". The two are never mixed in one row: the paper trained on LRS2 at full size for days on
GPUs, we train on the embedded corpus for minutes on a CPU, so only the *direction* of a difference
(does a module help?) can be compared, not the numbers.

A metric that could not run is ``None`` in the JSON and its cell holds the reason (``n/a: ...``).
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PAPER", "TABLES", "CONTROL_ROWS", "build_tables", "format_cell", "format_value", "load_rows"]

# Reported by the paper (LRS2). Table 1: PSNR, SSIM, M-LMD, F-LMD, FID, LSE-C, LPIPS.
# Table 2: BLEU, WER, CER, ROUGE-L, VTCS-B, VTCS-W. Table 3: PSNR, SSIM, FID, LSE-C, M-LMD,
# F-LMD, ROUGE-L, VTCS-B, VTCS-W.
PAPER = {
    "table1": {
        "Wav2Lip": dict(psnr=31.151, ssim=0.853, m_lmd=1.247, f_lmd=1.196, fid=4.738, lse_c=7.519, lpips=0.099),
        "OpFlowTalker": dict(psnr=32.832, ssim=0.888, m_lmd=0.890, f_lmd=0.960, fid=2.635, lse_c=8.162,
                             lpips=0.078),
        "Ground Truth": dict(psnr=100, ssim=1, m_lmd=0, f_lmd=0, fid=0, lse_c=8.248, lpips=0),
    },
    "table2": {
        "Wav2Lip": dict(bleu=0.1798, wer=0.9915, cer=0.6674, rouge_l=0.1526, vtcs_b=0.0207, vtcs_w=0.0209),
        "OpFlowTalker": dict(bleu=0.3273, wer=0.8275, cer=0.5326, rouge_l=0.2718, vtcs_b=0.0175, vtcs_w=0.0174),
        "Ground Truth": dict(bleu=0.8401, wer=0.3508, cer=0.1383, rouge_l=0.6089, vtcs_b=0, vtcs_w=0),
    },
    "table3": {
        "Baseline Wav2Lip": dict(psnr=31.150, ssim=0.853, fid=4.739, lse_c=7.519, m_lmd=1.247, f_lmd=1.196,
                                 rouge_l=0.1526, vtcs_b=0.0207, vtcs_w=0.0209),
        "OFS with FlowNet2": dict(psnr=32.384, ssim=0.881, fid=2.529, lse_c=7.978, m_lmd=0.892, f_lmd=0.963,
                                  rouge_l=0.2590, vtcs_b=0.0179, vtcs_w=0.0176),
        "OFS with RAFT": dict(psnr=32.488, ssim=0.886, fid=2.570, lse_c=7.923, m_lmd=0.910, f_lmd=0.966,
                              rouge_l=0.2643, vtcs_b=0.0177, vtcs_w=0.0175),
        "without Audio Augmentation": dict(psnr=32.547, ssim=0.883, fid=2.911, lse_c=8.138, m_lmd=0.971,
                                           f_lmd=1.005, rouge_l=0.2251, vtcs_b=0.0188, vtcs_w=0.0188),
        "without Optical Flow predictor": dict(psnr=32.588, ssim=0.881, fid=2.694, lse_c=8.237, m_lmd=0.985,
                                               f_lmd=1.015, rouge_l=0.2426, vtcs_b=0.0184, vtcs_w=0.0183),
        "without Sequential Fusion": dict(psnr=32.583, ssim=0.884, fid=2.669, lse_c=7.800, m_lmd=0.946,
                                          f_lmd=0.996, rouge_l=0.2325, vtcs_b=0.0188, vtcs_w=0.0189),
        "without OFSM": dict(psnr=32.371, ssim=0.876, fid=2.849, lse_c=8.200, m_lmd=1.010, f_lmd=1.043,
                             rouge_l=0.2508, vtcs_b=0.0181, vtcs_w=0.0182),
        "Full model (GMA)": dict(psnr=32.832, ssim=0.888, fid=2.635, lse_c=8.162, m_lmd=0.890, f_lmd=0.960,
                                 rouge_l=0.2718, vtcs_b=0.0175, vtcs_w=0.0174),
    },
}

# Columns of each table: (key, heading, higher is better). Ours add FD-face, LSE-D, the share of
# clips whose best offset is right, WER against the script, and in every table the two temporal
# metrics and the lip flow error (metrics/temporal.py), which the paper does not report as numbers.
TEMPORAL = [("silence_motion", "motion in silence ↓", False), ("jitter", "jitter ↓", False),
            ("flow_error", "lip flow error ↓", False)]
TABLES = {
    "table1": [("psnr", "PSNR ↑", True), ("ssim", "SSIM ↑", True), ("m_lmd", "M-LMD ↓", False),
               ("f_lmd", "F-LMD ↓", False), ("fid", "FID ↓", False), ("fd_face", "FD-face ↓", False),
               ("lse_c", "LSE-C ↑", True), ("lse_d", "LSE-D ↓", False), ("offset_ok", "offset ok ↑", True),
               ("lpips", "LPIPS ↓", False), *TEMPORAL],
    "table2": [("bleu", "BLEU ↑", True), ("wer", "WER ↓", False), ("cer", "CER ↓", False),
               ("rouge_l", "ROUGE-L ↑", True), ("vtcs_b", "VTCS-B ↓", False), ("vtcs_w", "VTCS-W ↓", False),
               ("wer_script", "WER vs script ↓", False), *TEMPORAL],
    "table3": [("psnr", "PSNR ↑", True), ("ssim", "SSIM ↑", True), ("fid", "FID ↓", False),
               ("fd_face", "FD-face ↓", False), ("lse_c", "LSE-C ↑", True), ("m_lmd", "M-LMD ↓", False),
               ("f_lmd", "F-LMD ↓", False), ("rouge_l", "ROUGE-L ↑", True), ("vtcs_b", "VTCS-B ↓", False),
               ("vtcs_w", "VTCS-W ↓", False), *TEMPORAL],
}

# Which of our variants appear in Tables 1 and 2 (Table 3 has every variant); the controls close
# every table.
MAIN_ROWS = ("wav2lip", "full", "full_motion")
CONTROL_ROWS = ("ground_truth", "still_reference", "wrong_audio", "shifted_audio")


def load_rows(*folders: str | Path) -> dict[str, dict]:
    rows = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")):
            row = json.loads(path.read_text())
            rows[row["variant"]] = row
    return rows


def format_value(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.3f}"


def format_cell(row: dict, key: str) -> str:
    """A value with its 95% interval, ``"0.512 [0.480, 0.547]"``, or why it is missing."""
    value = row.get(key)
    if value is None:
        reason = (row.get("unavailable") or {}).get(key, "not measured")
        return f"n/a ({reason})"
    interval = (row.get("ci") or {}).get(key)
    if interval is None or any(v is None or v != v for v in interval):
        return format_value(value)
    return f"{format_value(value)} [{format_value(interval[0])}, {format_value(interval[1])}]"


def build_tables(folder: str | Path, variants: dict[str, dict], controls: str | Path | None = None) -> dict:
    """Our rows (in ``variants`` order, then the controls) and the paper's, for each table."""
    rows = load_rows(folder, *([controls] if controls is not None else []))
    needed = list(variants) + (list(CONTROL_ROWS) if controls is not None else [])
    missing = [name for name in needed if name not in rows]
    if missing:
        raise ValueError(f"no evaluation of {', '.join(missing)} in {folder}; run `dvc repro` first")
    result = {}
    for table, columns in TABLES.items():
        names = [n for n in variants if table == "table3" or n in MAIN_ROWS] + \
            [n for n in CONTROL_ROWS if n in rows]
        keys = [k for k, _, _ in columns]
        ours = [{"variant": n, "label": rows[n]["label"], "kind": rows[n].get("kind", "generator"),
                 **{k: rows[n].get(k) for k in keys},
                 "ci": {k: (rows[n].get("ci") or {}).get(k) for k in keys},
                 "per_clip": {k: v for k, v in (rows[n].get("per_clip") or {}).items() if k in keys + ["keys"]},
                 "cells": {k: format_cell(rows[n], k) for k in keys}} for n in names]
        result[table] = {"columns": [{"key": k, "heading": h, "higher_is_better": b} for k, h, b in columns],
                         "ours": ours, "paper": PAPER[table]}
    return result
