"""Tables 1-7 of the paper from the evaluation JSONs, with the paper's reported rows beside ours.

Our rows come from ``metrics/generators/<variant>.json`` (written by ``opflowtalker evaluate``) and
the control rows from ``metrics/controls/<control>.json`` (``opflowtalker evaluate-reference``,
the same scoring function); each cell of ours carries its 95% bootstrap interval over the test
clips, and each row its per-clip values for paired comparisons. The paper's are :data:`PAPER`, copied
from its Tables 1-3, 6 and 7 (LRS2) and 4 and 5 (HDTF), always labelled "reported by the paper". :data:`LAYOUT` says
which of our variants fills each row, which paper row it stands beside, and the one switch in which
an ablation row differs from its table's reference. The two are never mixed in one row: the paper trained on LRS2 at full size for days on
GPUs, we train on the embedded corpus for minutes on a CPU, so only the *direction* of a difference
(does a module help?) can be compared, not the numbers.

A metric that could not run is ``None`` in the JSON and its cell holds the reason (``n/a: ...``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["PAPER", "TABLES", "LAYOUT", "LAYOUT_HD", "NOT_IN_HD", "hd_rows", "Row", "Table", "CONTROL_ROWS", "NOT_A_VARIANT", "build_tables", "format_cell", "format_value", "load_rows"]

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
    # Table 3, block by block (its Wav2Lip and full-model rows repeated where a block compares with them).
    "table3a": {
        "FlowNet2": dict(psnr=32.384, ssim=0.881, fid=2.529, lse_c=7.978, m_lmd=0.892, f_lmd=0.963, rouge_l=0.2590,
                         vtcs_b=0.0179, vtcs_w=0.0176),
        "RAFT": dict(psnr=32.488, ssim=0.886, fid=2.570, lse_c=7.923, m_lmd=0.910, f_lmd=0.966, rouge_l=0.2643,
                     vtcs_b=0.0177, vtcs_w=0.0175),
        "GMA": dict(psnr=32.832, ssim=0.888, fid=2.635, lse_c=8.162, m_lmd=0.890, f_lmd=0.960, rouge_l=0.2718,
                    vtcs_b=0.0175, vtcs_w=0.0174),
    },
    "table3b": {
        "1": dict(psnr=32.832, ssim=0.888, fid=2.635, lse_c=8.162, m_lmd=0.890, f_lmd=0.960, rouge_l=0.2718,
                  vtcs_b=0.0175, vtcs_w=0.0174),
        "2": dict(psnr=32.389, ssim=0.885, fid=2.614, lse_c=8.002, m_lmd=0.950, f_lmd=0.995, rouge_l=0.2571,
                  vtcs_b=0.0179, vtcs_w=0.0181),
        "5": dict(psnr=32.796, ssim=0.886, fid=2.662, lse_c=8.061, m_lmd=0.920, f_lmd=0.977, rouge_l=0.2555,
                  vtcs_b=0.0181, vtcs_w=0.0180),
    },
    "table3c": {
        "Face": dict(psnr=32.376, ssim=0.882, fid=2.721, lse_c=8.124, m_lmd=0.956, f_lmd=1.007, rouge_l=0.2495,
                     vtcs_b=0.0181, vtcs_w=0.0180),
        "Mouth": dict(psnr=32.388, ssim=0.880, fid=2.927, lse_c=8.276, m_lmd=0.971, f_lmd=1.010, rouge_l=0.2492,
                      vtcs_b=0.0182, vtcs_w=0.0183),
        "Face+Mouth": dict(psnr=32.638, ssim=0.883, fid=2.765, lse_c=8.320, m_lmd=0.959, f_lmd=1.014, rouge_l=0.2561,
                           vtcs_b=0.0178, vtcs_w=0.0177),
    },
    "table3d": {
        "Baseline Wav2Lip": dict(psnr=31.150, ssim=0.853, fid=4.739, lse_c=7.519, m_lmd=1.247, f_lmd=1.196,
                                 rouge_l=0.1526, vtcs_b=0.0207, vtcs_w=0.0209),
        "without Audio Augmentation": dict(psnr=32.547, ssim=0.883, fid=2.911, lse_c=8.138, m_lmd=0.971,
                                           f_lmd=1.005, rouge_l=0.2251, vtcs_b=0.0188, vtcs_w=0.0188),
        "without Optical Flow predictor": dict(psnr=32.588, ssim=0.881, fid=2.694, lse_c=8.237, m_lmd=0.985,
                                               f_lmd=1.015, rouge_l=0.2426, vtcs_b=0.0184, vtcs_w=0.0183),
        "without Sequential Fusion": dict(psnr=32.583, ssim=0.884, fid=2.669, lse_c=7.800, m_lmd=0.946,
                                          f_lmd=0.996, rouge_l=0.2325, vtcs_b=0.0188, vtcs_w=0.0189),
        "without OFSM": dict(psnr=32.371, ssim=0.876, fid=2.849, lse_c=8.200, m_lmd=1.010, f_lmd=1.043,
                             rouge_l=0.2508, vtcs_b=0.0181, vtcs_w=0.0182),
        "Full model": dict(psnr=32.832, ssim=0.888, fid=2.635, lse_c=8.162, m_lmd=0.890, f_lmd=0.960,
                           rouge_l=0.2718, vtcs_b=0.0175, vtcs_w=0.0174),
    },
    # Appendix A.3 (LRS2).
    "table6": {
        "MSE": dict(psnr=32.712, ssim=0.884, fid=2.712, lpips=0.081, lse_c=8.130, lse_d=6.043, m_lmd=0.972,
                    f_lmd=1.0146, rouge_l=0.2481, vtcs_b=0.0182, vtcs_w=0.0178),
        "MAE": dict(psnr=32.588, ssim=0.881, fid=2.694, lpips=0.080, lse_c=8.237, lse_d=6.020, m_lmd=0.9851,
                    f_lmd=1.015, rouge_l=0.2426, vtcs_b=0.0184, vtcs_w=0.0183),
    },
    "table7": {
        "Mean": dict(psnr=32.376, ssim=0.882, fid=2.721, lpips=0.080, lse_c=8.124, lse_d=6.036, m_lmd=0.956,
                     f_lmd=1.007, rouge_l=0.2495, vtcs_b=0.0181, vtcs_w=0.0180),
        "Max": dict(psnr=32.523, ssim=0.883, fid=2.824, lpips=0.075, lse_c=8.300, lse_d=5.905, m_lmd=0.943,
                    f_lmd=0.996, rouge_l=0.2548, vtcs_b=0.0180, vtcs_w=0.0177),
    },
    # Appendix A.1 and A.3 (HDTF). Table 5 in its four blocks, as Table 3; M/F-LMD as two columns.
    "table4": {
        "OpFlowTalker": dict(bleu=0.3389, wer=0.8542, cer=0.5465, rouge_l=0.3530, vtcs_b=0.0269, vtcs_w=0.0105),
        "Ground Truth": dict(bleu=0.7011, wer=0.3849, cer=0.2161, rouge_l=0.7242, vtcs_b=0, vtcs_w=0),
    },
    "table5a": {
        "FlowNet2": dict(psnr=30.406, ssim=0.685, fid=13.671, lse_c=3.924, m_lmd=2.345, f_lmd=2.069, lpips=0.239),
        "RAFT": dict(psnr=30.438, ssim=0.685, fid=13.882, lse_c=3.967, m_lmd=2.417, f_lmd=2.092, lpips=0.240),
        "GMA": dict(psnr=30.498, ssim=0.685, fid=14.246, lse_c=3.975, m_lmd=2.414, f_lmd=2.120, lpips=0.241),
    },
    "table5b": {
        "1": dict(psnr=30.498, ssim=0.685, fid=14.246, lse_c=3.975, m_lmd=2.414, f_lmd=2.120, lpips=0.241),
        "2": dict(psnr=30.366, ssim=0.684, fid=14.020, lse_c=4.108, m_lmd=2.594, f_lmd=2.230, lpips=0.243),
        "5": dict(psnr=30.515, ssim=0.686, fid=14.163, lse_c=3.982, m_lmd=2.489, f_lmd=2.176, lpips=0.239),
    },
    "table5c": {
        "Face": dict(psnr=30.306, ssim=0.684, fid=15.248, lse_c=4.144, m_lmd=2.619, f_lmd=2.296, lpips=0.243),
        "Mouth": dict(psnr=30.335, ssim=0.685, fid=15.256, lse_c=4.208, m_lmd=2.680, f_lmd=2.336, lpips=0.245),
        "Face+Mouth": dict(psnr=30.438, ssim=0.685, fid=14.469, lse_c=4.308, m_lmd=2.641, f_lmd=2.349, lpips=0.242),
    },
    "table5d": {  # the paper names each module row by the module removed
        "Baseline Wav2Lip": dict(psnr=29.756, ssim=0.677, fid=23.515, lse_c=4.632, m_lmd=3.369, f_lmd=2.70,
                                 lpips=0.275),
        "without Optical Flow predictor": dict(psnr=30.455, ssim=0.684, fid=15.082, lse_c=4.144, m_lmd=2.727,
                                               f_lmd=2.313, lpips=0.242),
        "without Sequential Fusion": dict(psnr=30.393, ssim=0.685, fid=14.664, lse_c=4.000, m_lmd=2.528,
                                          f_lmd=2.249, lpips=0.243),
        "without OFSM": dict(psnr=30.336, ssim=0.682, fid=15.664, lse_c=4.281, m_lmd=2.956, f_lmd=2.517,
                             lpips=0.245),
        "Full model": dict(psnr=30.515, ssim=0.686, fid=14.163, lse_c=3.982, m_lmd=2.489, f_lmd=2.176, lpips=0.239),
    },
}
# Every table of the paper ends with its ground truth (Tables 3, 6 and 7 give the same one).
_TRUTH3 = dict(psnr=100, ssim=1, fid=0, lse_c=8.248, m_lmd=0, f_lmd=0, rouge_l=0.6089, vtcs_b=0, vtcs_w=0)
for _name in ("table3a", "table3b", "table3c", "table3d"):
    PAPER[_name]["Ground Truth"] = dict(_TRUTH3)
for _name in ("table6", "table7"):
    PAPER[_name]["Ground Truth"] = dict(_TRUTH3, lpips=0, lse_d=6.258)
for _name in ("table5a", "table5b", "table5c", "table5d"):
    PAPER[_name]["Ground Truth"] = dict(psnr=100, ssim=1, fid=0, lse_c=3.932, m_lmd=0, f_lmd=0, lpips=0)

# Columns of each table: (key, heading, higher is better). Ours add FD-face, LSE-D, the share of
# clips whose best offset is right, WER against the script, and in every table the two temporal
# metrics and the lip flow error (metrics/temporal.py), which the paper does not report as numbers.
TEMPORAL = [("silence_motion", "motion in silence ↓", False), ("jitter", "jitter ↓", False),
            ("flow_error", "lip flow error ↓", False)]
_TABLE3 = [("psnr", "PSNR ↑", True), ("ssim", "SSIM ↑", True), ("fid", "FID ↓", False),
           ("fd_face", "FD-face ↓", False), ("lse_c", "LSE-C ↑", True), ("m_lmd", "M-LMD ↓", False),
           ("f_lmd", "F-LMD ↓", False), ("rouge_l", "ROUGE-L ↑", True), ("vtcs_b", "VTCS-B ↓", False),
           ("vtcs_w", "VTCS-W ↓", False), *TEMPORAL]
_APPENDIX = [("psnr", "PSNR ↑", True), ("ssim", "SSIM ↑", True), ("fid", "FID ↓", False),
             ("fd_face", "FD-face ↓", False), ("lpips", "LPIPS ↓", False), ("lse_c", "LSE-C ↑", True),
             ("lse_d", "LSE-D ↓", False), ("m_lmd", "M-LMD ↓", False), ("f_lmd", "F-LMD ↓", False),
             ("rouge_l", "ROUGE-L ↑", True), ("vtcs_b", "VTCS-B ↓", False), ("vtcs_w", "VTCS-W ↓", False), *TEMPORAL]
_LIPREADING = [("bleu", "BLEU ↑", True), ("wer", "WER ↓", False), ("cer", "CER ↓", False),
               ("rouge_l", "ROUGE-L ↑", True), ("vtcs_b", "VTCS-B ↓", False), ("vtcs_w", "VTCS-W ↓", False),
               ("wer_script", "WER vs script ↓", False), *TEMPORAL]  # Tables 2 and 4
TABLES = {
    "table1": [("psnr", "PSNR ↑", True), ("ssim", "SSIM ↑", True), ("m_lmd", "M-LMD ↓", False),
               ("f_lmd", "F-LMD ↓", False), ("fid", "FID ↓", False), ("fd_face", "FD-face ↓", False),
               ("lse_c", "LSE-C ↑", True), ("lse_d", "LSE-D ↓", False), ("offset_ok", "offset ok ↑", True),
               ("lpips", "LPIPS ↓", False), *TEMPORAL],
    "table2": _LIPREADING,
    **{name: _TABLE3 for name in ("table3a", "table3b", "table3c", "table3d")},
    **{name: _APPENDIX for name in ("table6", "table7")},
    "table4": _LIPREADING,
    **{name: [("psnr", "PSNR ↑", True), ("ssim", "SSIM ↑", True), ("fid", "FID ↓", False),
              ("fd_face", "FD-face ↓", False), ("lse_c", "LSE-C ↑", True), ("m_lmd", "M-LMD ↓", False),
              ("f_lmd", "F-LMD ↓", False), ("lpips", "LPIPS ↓", False), *TEMPORAL]
       for name in ("table5a", "table5b", "table5c", "table5d")},
}

@dataclass(frozen=True)
class Row:
    """One row of a table: our variant, the paper's label for the same setting (None: the paper has
    no such row), and the one field of the generator's parameters in which it differs from the
    table's reference (None for the reference itself and for rows shown for context: the baseline,
    our own additions)."""

    variant: str
    paper: str | None = None
    switch: str | None = None


@dataclass(frozen=True)
class Table:
    """A table of the paper as we regenerate it: its rows in order, the reference every ablation
    row differs from by one switch, and the variant whose paper row the others are compared with
    (the paper's direction is read as "is this row better or worse than that one?")."""

    title: str
    rows: tuple[Row, ...]
    reference: str
    compare_with: str | None = None  # default: the reference

    @property
    def paper_names(self) -> dict[str, str]:
        return {row.variant: row.paper for row in self.rows if row.paper is not None}

    @property
    def anchor(self) -> str:
        return self.compare_with or self.reference


# The paper's tables, ours beside them. Table 3 is split in its four blocks, each with its own
# reference; every table ends with the controls (CONTROL_ROWS).
LAYOUT = {
    "table1": Table("Table 1: talking faces, image quality and lip sync", reference="full",
                    rows=(Row("wav2lip", "Wav2Lip"), Row("full", "OpFlowTalker"), Row("full_motion"))),
    "table2": Table("Table 2: lip-reading intelligibility", reference="full",
                    rows=(Row("wav2lip", "Wav2Lip"), Row("full", "OpFlowTalker"), Row("full_motion"))),
    "table3a": Table("Table 3a: the flow network of the OFS loss", reference="full", compare_with="raft",
                     rows=(Row("flownet", "FlowNet2", "flow_network"), Row("raft", "RAFT", "flow_network"),
                           Row("gma", "GMA", "flow_network"), Row("full"))),
    "table3b": Table("Table 3b: the frame interval of the OFS loss", reference="interval_1",
                     rows=(Row("interval_1", "1"), Row("interval_2", "2", "ofs_interval"),
                           Row("interval_3", None, "ofs_interval"), Row("interval_5", "5", "ofs_interval"))),
    "table3c": Table("Table 3c: the area the OFS loss watches", reference="full",
                     rows=(Row("ofs_face", "Face", "ofs_area"), Row("ofs_mouth", "Mouth", "ofs_area"),
                           Row("full", "Face+Mouth"))),
    "table3d": Table("Table 3d: each module of OpFlowTalker removed", reference="full",
                     rows=(Row("wav2lip", "Baseline Wav2Lip"),
                           Row("no_audio_aug", "without Audio Augmentation", "audio_aug"),
                           Row("no_flow_predictor", "without Optical Flow predictor", "flow_predictor"),
                           Row("no_sequential_fusion", "without Sequential Fusion", "sequential_fusion"),
                           Row("no_ofs", "without OFSM", "ofs_weight"),
                           Row("full", "Full model"), Row("full_motion"))),
    "table6": Table("Table 6: the distance of the OFS loss", reference="full",
                    rows=(Row("full", "MSE"), Row("ofs_mae", "MAE", "ofs_distance"))),
    "table7": Table("Table 7: pooling the OFS loss over a window", reference="full",
                    rows=(Row("full", "Mean"), Row("ofs_max", "Max", "ofs_reduction"))),
}
CONTROL_ROWS = ("ground_truth", "still_reference", "wrong_audio", "shifted_audio")
NOT_A_VARIANT = "not a variant of params.yaml"

# The HDTF-shaped half (params.yaml: hd): Table 4 as Table 2, Table 5 in the blocks of Table 3, on the
# corpus rendered at 256 px. Its rows are the variants of the LRS2-shaped half, trained at 256 px
# (hd.variants) or, for a 96-px model (the public Wav2Lip is one), run on frames resized to 96 px and
# back (hd.resized); the others are not trained in this half and say so.
LAYOUT_HD = {
    "table4": Table("Table 4: lip-reading intelligibility, HDTF-shaped (256 px)", reference="full",
                    rows=(Row("wav2lip"), Row("full", "OpFlowTalker"))),
    **{f"table5{block}": replace(
        LAYOUT[f"table3{block}"],
        title=LAYOUT[f"table3{block}"].title.replace("Table 3", "Table 5") + ", HDTF-shaped (256 px)",
        rows=tuple(replace(row, paper=row.paper if row.paper in PAPER[f"table5{block}"] else None)
                   for row in LAYOUT[f"table3{block}"].rows))  # HDTF's Table 5 has no audio-augmentation row
       for block in "abcd"},
}
NOT_IN_HD = ("not trained in the HDTF-shaped half (hd.variants in params.yaml): a 256-px generator costs "
             "as much as several 96-px ones, and this half trains only the rows listed there")


def hd_rows(hd: dict, variants: dict[str, dict], from_scratch: dict[str, dict]) -> dict[str, str]:
    """The rows the HDTF-shaped half scores: ``{variant: "trained" | "resized"}`` from ``hd.variants``
    (trained at 256 px: only variants trained from scratch, since a loss variant would need a 256-px
    warm-up of its own) and ``hd.resized`` (a 96-px model of the LRS2-shaped half on resized frames)."""
    trained, resized = list(hd.get("variants") or []), list(hd.get("resized") or [])
    for name in trained:
        if name not in from_scratch:
            raise ValueError(f"hd.variants: {name!r} is not a variant trained from scratch "
                             f"(generators.variants: {', '.join(from_scratch)})")
    for name in resized:
        if name not in variants or name in trained:
            raise ValueError(f"hd.resized: {name!r} must be a variant of the LRS2-shaped half not in hd.variants")
    return {**{n: "trained" for n in trained}, **{n: "resized" for n in resized}}


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


def _scored_row(r: dict, keys: list[str], kind: str) -> dict:
    """One evaluated row (a generator's or a control's) cut to a table's columns."""
    return {"variant": r["variant"], "label": r["label"], "kind": r.get("kind", kind), **{k: r.get(k) for k in keys},
            "ci": {k: (r.get("ci") or {}).get(k) for k in keys},
            "per_clip": {k: v for k, v in (r.get("per_clip") or {}).items() if k in keys + ["keys"]},
            "cells": {k: format_cell(r, k) for k in keys}}


def _missing_row(variant: str, label: str, why: str, keys: list[str]) -> dict:
    # Its reason once, in ``why``; each cell only points there.
    return {"variant": variant, "label": label, "kind": "missing", "why": why, **{k: None for k in keys},
            "ci": {k: None for k in keys}, "per_clip": {}, "cells": {k: "n/a (row not in this run)" for k in keys}}


def build_tables(folder: str | Path, variants: dict[str, dict], controls: str | Path | None = None,
                 layout: dict[str, Table] | None = None, scored: dict[str, str] | None = None) -> dict:
    """Each table of ``layout`` (:data:`LAYOUT` by default; :data:`LAYOUT_HD` for the HDTF-shaped
    half): our rows in its order (a row whose variant ``variants`` does not define, or that is not
    trained, shows why in its cells), then the controls, and the paper's rows. ``scored``: the
    variants evaluated in this half (by default all of ``variants``); the others are missing rows."""
    layout = LAYOUT if layout is None else layout
    scored = dict.fromkeys(variants, "trained") if scored is None else scored
    rows = load_rows(folder, *([controls] if controls is not None else []))
    needed = list(scored) + (list(CONTROL_ROWS) if controls is not None else [])
    missing = [name for name in needed if name not in rows]
    if missing:
        raise ValueError(f"no evaluation of {', '.join(missing)} in {folder}; run `dvc repro` first")
    result = {}
    for table, shape in layout.items():
        columns = TABLES[table]
        keys = [k for k, _, _ in columns]
        ours = []
        for row in shape.rows:
            if row.variant not in variants or row.variant not in scored:
                why = NOT_A_VARIANT if row.variant not in variants else NOT_IN_HD
                label = (variants.get(row.variant) or {}).get("label") or row.paper or row.variant
                ours.append(_missing_row(row.variant, label, why, keys))
                continue
            ours.append({**_scored_row(rows[row.variant], keys, "generator"), "switch": row.switch})
        ours += [_scored_row(rows[name], keys, "control") for name in CONTROL_ROWS if name in rows]
        result[table] = {"title": shape.title, "reference": shape.reference, "compare_with": shape.anchor,
                         "paper_names": shape.paper_names,
                         "columns": [{"key": k, "heading": h, "higher_is_better": b} for k, h, b in columns],
                         "ours": ours, "paper": PAPER[table]}
    return result
