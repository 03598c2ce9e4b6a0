"""What the study chapter shows, computed from the pipeline's outputs: tables, winners, curves, costs.

The book's study chapter states results in sentences, and every number in those sentences has to
come from the run it describes, whichever way the run came out. This module turns the pipeline's
JSON and NPZ outputs into what the chapter draws and says:

* :func:`table_frame` and :func:`winner_mask`: the paper's Tables 1-3 (``metrics/tables.json``,
  from :mod:`opflowtalker.tables`) as DataFrames, our rows and the paper's reported rows kept
  apart, with the better of two of our variants marked per column.
* :func:`better_of` and :func:`head_to_head_sentences`: which of two variants wins each metric, by
  how much, as Markdown. Two values that print the same at the tables' precision are a tie.
* :func:`agreement_with_paper`: whether the full model beats each other variant on a metric in the
  same direction here as in the paper's rows, the only comparison with the paper that the two
  scales allow.
* :func:`training_curves` and :func:`eval_curves`: one loss term (or validation score) of several
  training logs (``fit``'s JSON) on a shared step axis.
* :func:`lipreader_verdict` and :func:`syncnet_verdict`: whether the two experts beat chance, the
  condition for the lip-readability and sync metrics built on them to mean anything.
* :func:`stage_minutes`: the wall time of each stage of the last ``dvc repro``, in pipeline order.
* :func:`frame_strip_rows`: the rows of a Figure-3-style strip, real frames on top.
* :func:`loudness_per_frame`, :func:`lip_sync_row` and :func:`lip_sync_sentence`: whether a
  generated mouth opens with the speech (the generate chapter), from a lip gap per frame.
* :func:`window_samples` and :func:`window_loudness`: which stretch of audio each frame's mel window
  is computed from, and how loud it is, so the audio chapter can say which windows hear silence.
* :func:`sharpness` and :func:`sharpness_sentence`: whether generated faces keep the photo's detail
  (variance of the Laplacian), for the generate chapter.
* :func:`video_html`: a clip as a ``<video>`` that plays in every browser: WebM (VP9, Opus) first,
  for open-source Chromium and Firefox, which have no H.264, then the H.264 mp4, with the first
  frame as its poster, all embedded so the page needs no other file.

The other chapters' sentences are built from these too, so a chapter's prose follows its run.
"""
from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from .audio import MEL_WINDOW_STEPS, WAV2LIP, MelParams, mel_steps_per_second
from .stages import PIPELINE_ORDER
from .metrics.intervals import NO_DIFFERENCE, paired_interval, verdict
from .tables import format_cell, format_value
from .errors import OpFlowTalkerError

__all__ = ["ReportError", "video_html", "variant_labels", "table_views", "agreement_sentence", "versus_reference", "missing_rows", "table_frame", "unavailable_notes",
           "paired_difference", "better_of", "winner_mask", "paper_rows", "agreement_with_paper", "head_to_head_sentences", "training_curves", "eval_curves", "lipreader_verdict",
           "syncnet_verdict", "stage_minutes", "strips_of_clip", "frame_strip_rows", "moving_stretch", "SILENCE", "loudness_per_frame",
           "lip_sync_row", "lip_sync_sentence", "window_samples", "window_loudness", "sharpness",
           "sharpness_sentence", "judge_calibration_table", "judge_bounds", "flow_network_bounds", "lip_sync_bounds", "speech_by_voice", "sync_judge_verdict",
           "expert_calibration"]

TIE = "tie"


class ReportError(OpFlowTalkerError, ValueError):
    """Pipeline outputs that the chapter cannot report on; one sentence for the user."""


def variant_labels(params: Mapping) -> dict[str, str]:
    """``{variant: label}`` of ``params.yaml``'s generator variants (``generators.variants``, then
    ``generators.loss_variants``), in the file's order."""
    group = params.get("generators") or {}
    variants = {**(group.get("variants") or {}), **(group.get("loss_variants") or {})}
    if not variants:
        raise ReportError("params.yaml defines no generators.variants to report on")
    return {name: (spec or {}).get("label", name) for name, spec in variants.items()}


def _value(row: Mapping, key: str) -> float:
    value = row.get(key)
    return float("nan") if value is None else float(value)


def table_frame(table: Mapping, which: str = "ours") -> pd.DataFrame:
    """One table of ``metrics/tables.json`` as a DataFrame: rows by label, columns by heading.

    ``which="ours"`` gives our rows, a metric that could not run as NaN (its reason is in
    :func:`unavailable_notes`). ``which="paper"`` gives the rows reported by the paper, with only
    the columns the paper reports (it has no FD-face or LSE-D).
    """
    columns = table["columns"]
    if which == "ours":
        data = {row["label"]: {c["heading"]: _value(row, c["key"]) for c in columns} for row in table["ours"]}
        headings = [c["heading"] for c in columns]
    elif which == "paper":
        reported = [c for c in columns if any(c["key"] in row for row in table["paper"].values())]
        data = {label: {c["heading"]: _value(row, c["key"]) for c in reported} for label, row in table["paper"].items()}
        headings = [c["heading"] for c in reported]
    else:
        raise ReportError(f"which must be 'ours' or 'paper', not {which!r}")
    return pd.DataFrame.from_dict(data, orient="index", columns=headings).rename_axis(None)


def unavailable_notes(table: Mapping) -> dict[str, str]:
    """``{heading: reason}`` for the columns where some row of ours could not be computed (a row
    that is missing as a whole says why in :func:`missing_rows` instead)."""
    notes = {}
    for column in table["columns"]:
        for row in table["ours"]:
            if row.get("kind") == "missing":
                continue
            cell = row.get("cells", {}).get(column["key"], "")
            if row.get(column["key"]) is None and cell.startswith("n/a"):
                notes[column["heading"]] = cell.removeprefix("n/a").strip().removeprefix("(").removesuffix(")")
                break
    return notes


def missing_rows(table: Mapping) -> dict[str, str]:
    """``{label: reason}`` for the rows of a table that this run has no evaluation of."""
    reasons = {}
    for row in table["ours"]:
        if row.get("kind") == "missing":
            reasons[row["label"]] = row["why"]
    return reasons


def _row(rows: Sequence[Mapping], variant: str) -> Mapping:
    for row in rows:
        if row.get("variant") == variant:
            return row
    raise ReportError(f"the tables have no row for the variant {variant!r}")


def _shown(value: float, key: str) -> str:
    # The tables' own formatting, so that "equal" means "prints the same in the table".
    return format_value(value)


def paired_difference(row_a: Mapping, row_b: Mapping, key: str) -> tuple[float, float, float] | None:
    """(a - b, low, high): the paired 95% interval over the clips both rows were scored on, or None
    when either row lacks per-clip values of ``key`` (the paper's rows, FD-face)."""
    pa, pb = (row_a.get("per_clip") or {}).get(key), (row_b.get("per_clip") or {}).get(key)
    if pa is None or pb is None or len(pa) != len(pb):
        return None
    keys_a, keys_b = (row_a.get("per_clip") or {}).get("keys"), (row_b.get("per_clip") or {}).get("keys")
    if keys_a is not None and keys_b is not None and list(keys_a) != list(keys_b):
        raise ReportError(f"rows {row_a.get('variant')!r} and {row_b.get('variant')!r} were scored on other clips")
    return paired_interval(pa, pb)


def better_of(rows: Sequence[Mapping], a: str, b: str, columns: Sequence[Mapping]) -> dict[str, str | None]:
    """Per column key: the variant (``a`` or ``b``) that is better given the column's direction,
    ``"tie"`` when no difference is measured, or None when either value could not be computed.

    Rows with per-clip values are compared by the paired 95% interval of the difference: a win
    only when it excludes zero. Rows without them (the paper's) by the printed values."""
    row_a, row_b = _row(rows, a), _row(rows, b)
    winners: dict[str, str | None] = {}
    for column in columns:
        key = column["key"]
        va, vb = row_a.get(key), row_b.get(key)
        if va is None or vb is None or math.isnan(va) or math.isnan(vb):
            winners[key] = None
            continue
        paired = paired_difference(row_a, row_b, key)
        if paired is not None:
            outcome = verdict(paired[1], paired[2], bool(column["higher_is_better"]), a, b)
            winners[key] = TIE if outcome == NO_DIFFERENCE else outcome
        elif _shown(va, key) == _shown(vb, key):
            winners[key] = TIE
        else:
            a_higher = va > vb
            winners[key] = a if a_higher == bool(column["higher_is_better"]) else b
    return winners


def winner_mask(table: Mapping, a: str, b: str) -> pd.DataFrame:
    """Booleans shaped like ``table_frame(table, "ours")``: True on the better of ``a`` and ``b``
    in each column (neither on a tie or a missing value), for highlighting."""
    frame = table_frame(table, "ours")
    mask = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    labels = {row["variant"]: row["label"] for row in table["ours"]}
    for column in table["columns"]:
        winner = better_of(table["ours"], a, b, [column])[column["key"]]
        if winner not in (None, TIE):
            mask.loc[labels[winner], column["heading"]] = True
    return mask


def paper_rows(table: Mapping, names: Mapping[str, str]) -> list[dict]:
    """The paper's rows of ``table`` shaped like ours, ``variant`` being our name for each row that
    ``names`` (our variant -> the paper's label) maps; rows it does not map are left out."""
    return [{"variant": ours, "label": label, **table["paper"][label]}
            for ours, label in names.items() if label in table["paper"]]


def agreement_with_paper(table: Mapping, names: Mapping[str, str], full: str = "full") -> pd.DataFrame:
    """For each of our variants other than ``full`` that the paper also reports, per column: is
    the winner of ``full`` against it the same here as in the paper?

    Cells: ``"same"``, ``"opposite"``, ``"tie here"`` (level here, not in the paper) or ``"n/a"``
    (not computed here, or not reported by the paper). Rows by our label, columns by heading.
    """
    ours, reported = table["ours"], paper_rows(table, names)
    if full not in {r["variant"] for r in reported}:
        raise ReportError(f"no row of the paper is mapped to our variant {full!r}")
    labels = {row["variant"]: row["label"] for row in ours}
    cells = {}
    for row in reported:
        variant = row["variant"]
        if variant == full or variant not in labels:
            continue
        here = better_of(ours, full, variant, table["columns"])
        there = better_of(reported, full, variant, table["columns"])
        cells[labels[variant]] = {
            c["heading"]: ("n/a" if here[c["key"]] is None or there[c["key"]] is None else
                           "same" if here[c["key"]] == there[c["key"]] else
                           "tie here" if here[c["key"]] == TIE else "opposite")
            for c in table["columns"]}
    return pd.DataFrame.from_dict(cells, orient="index", columns=[c["heading"] for c in table["columns"]])


def agreement_sentence(table: Mapping) -> str:
    """One sentence on whether this table agrees with the paper's direction: over every row the
    paper also reports, against the row both compare with (``table["compare_with"]``), how often
    the winner of a metric is the paper's, the other, or not measured here (paired interval)."""
    anchor = table["compare_with"]
    agreement = agreement_with_paper(table, table["paper_names"], anchor)
    cells = agreement.to_numpy().ravel().tolist()
    same, opposite, tied = cells.count("same"), cells.count("opposite"), cells.count("tie here")
    compared = same + opposite + tied
    label = _row(table["ours"], anchor)["label"]
    if compared == 0:
        return f"No metric of this table is both computed here and reported by the paper against {label}."
    counts = (f"Against {label}, over the {compared} comparisons (row by metric) that both this run and the paper "
              f"make, the winner is the paper's on {same}, the other on {opposite}, and no difference is measured "
              f"here on {tied}")
    if same + opposite == 0:
        return counts + ": this run can neither confirm nor contradict the paper's direction."
    if same > opposite:
        return counts + ": where a difference is measured, it mostly goes the paper's way."
    if opposite > same:
        return counts + ": where a difference is measured, it mostly goes against the paper."
    return counts + ": where a difference is measured, it goes as often each way."


def versus_reference(table: Mapping) -> pd.DataFrame:
    """Each row of ours that changes one switch from the table's reference, by column: ``"better"``
    or ``"worse"`` than the reference by the paired 95% interval, ``"="`` when no difference is
    measured, ``""`` when not computed. Rows by label, columns by heading."""
    reference = table["reference"]
    cells = {}
    for row in table["ours"]:
        if not row.get("switch") or row.get("kind") == "missing":
            continue
        winners = better_of(table["ours"], row["variant"], reference, table["columns"])
        cells[row["label"]] = {c["heading"]: {None: "", TIE: "=", row["variant"]: "better"}.get(winners[c["key"]], "worse")
                               for c in table["columns"]}
    return pd.DataFrame.from_dict(cells, orient="index", columns=[c["heading"] for c in table["columns"]])


_AGREEMENT_SYMBOLS = {"same": "✓", "opposite": "✗", "tie here": "=", "n/a": ""}
_VERSUS_STYLE = {"better": "background-color: #d8ecd3", "worse": "background-color: #f6d5d5"}


def table_views(table: Mapping, head_to_head: bool, data: str, paper_data: str) -> list:
    """What a chapter shows for one table, in order, for ``IPython.display``: our rows (with
    intervals; ``head_to_head``: the better of OpFlowTalker and Wav2Lip in bold, else green/red where
    a row beats/loses to the table's reference by the paired 95% interval), the missing rows' and
    missing metrics' reasons, how many metrics each ablation row moves, the paper's rows (labelled
    as the paper's, on ``paper_data``), and the sentence and grid on the paper's direction.
    ``data`` names our data in the captions."""
    from IPython.display import Markdown

    views: list = []
    headings = {col["key"]: col["heading"] for col in table["columns"]}
    ours = pd.DataFrame.from_dict({row["label"]: {headings[k]: cell for k, cell in row["cells"].items()}
                                   for row in table["ours"]}, orient="index")[list(headings.values())]
    reference = _row(table["ours"], table["reference"])["label"]
    if head_to_head:
        mask = winner_mask(table, "full", "wav2lip").replace({True: "font-weight: bold; background-color: #d8ecd3",
                                                              False: ""})
        caption = f"ours ({data}); bold: the better of Wav2Lip and OpFlowTalker"
    else:
        versus = versus_reference(table)
        mask = pd.DataFrame("", index=ours.index, columns=ours.columns)
        mask.loc[versus.index, versus.columns] = versus.replace(_VERSUS_STYLE).replace({"=": ""})
        caption = f"ours ({data}); green/red: better/worse than {reference} by the paired 95% interval"
    views.append(ours.style.apply(lambda _: mask, axis=None).set_caption(caption))
    by_reason: dict[str, list[str]] = {}
    for label, why in missing_rows(table).items():
        by_reason.setdefault(why, []).append(label)
    if by_reason:
        views.append(Markdown("Rows not in this run: " + "; ".join(f"{', '.join(labels)}: {why}"
                                                                   for why, labels in by_reason.items()) + "."))
    notes = unavailable_notes(table)
    if notes:
        views.append(Markdown("n/a: " + "; ".join(f"{heading} {reason}" for heading, reason in notes.items()) + "."))
    if not head_to_head and len(versus):
        moved = {label: int(versus.loc[label].isin(["better", "worse"]).sum()) for label in versus.index}
        views.append(Markdown(f"Against {reference}, a difference is measured on " + "; ".join(
            f"{n} of {(versus.loc[label] != '').sum()} metrics for {label}" for label, n in moved.items()) + "."))
    views.append(table_frame(table, "paper").style.format(lambda v: "" if pd.isna(v) else format_value(v))
                 .set_caption(f"reported by the paper ({paper_data}, not comparable in scale)"))
    agreement = agreement_with_paper(table, table["paper_names"], table["compare_with"])
    anchor = _row(table["ours"], table["compare_with"])
    if agreement.empty or anchor.get("kind") == "missing":
        views.append(Markdown("No row of this table is both reported by the paper and computed here, besides the "
                              "one they are compared with, or that one is not in this run."))
        return views
    agreement = agreement.loc[:, (agreement != "n/a").any()]  # drop what only one side reports
    views.append(Markdown(agreement_sentence(table)))
    views.append(agreement.replace(_AGREEMENT_SYMBOLS).style
                 .set_caption(f"{anchor['label']} against each row: ✓ the paper's winner, ✗ the other, = no difference "
                              "measured here")
                 .map(lambda v: {"✓": "color: #1a7a1a", "✗": "color: #b22222"}.get(v, "color: grey"))
                 .set_properties(**{"text-align": "center"}))
    return views


def _metric_columns(tables: Mapping) -> list[Mapping]:
    """Every metric once, in the order Tables 1, 2, 3 first show it."""
    seen, columns = set(), []
    for name in sorted(tables):
        for column in tables[name]["columns"]:
            if column["key"] not in seen:
                seen.add(column["key"])
                columns.append(column)
    return columns


def _all_rows(tables: Mapping) -> list[Mapping]:
    # A variant's row in each table holds that table's columns; its per-clip values, intervals and
    # cells are merged across the tables, not replaced by the last table's.
    rows: dict[str, dict] = {}
    for name in sorted(tables):
        for row in tables[name]["ours"]:
            merged = rows.setdefault(row["variant"], {})
            for key, value in row.items():
                if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
    return list(rows.values())


def head_to_head_sentences(tables: Mapping, a: str = "full", b: str = "wav2lip") -> str:
    """Markdown: which of variants ``a`` and ``b`` wins each metric of the tables, by the paired
    95% interval of the difference over the same test clips ("no difference measured" when it
    includes zero).

    The lead sentence counts the wins each way and names the metrics that could not be computed;
    one bullet per metric follows with both values and the difference with its interval.
    """
    rows = _all_rows(tables)
    row_a, row_b = _row(rows, a), _row(rows, b)
    label_a, label_b = row_a["label"], row_b["label"]
    columns = _metric_columns(tables)
    winners = better_of(rows, a, b, columns)
    measured = [c for c in columns if winners[c["key"]] is not None]
    if not measured:
        raise ReportError(f"no metric was computed for both {a!r} and {b!r}")
    wins_a = [c for c in measured if winners[c["key"]] == a]
    wins_b = [c for c in measured if winners[c["key"]] == b]
    ties = [c for c in measured if winners[c["key"]] == TIE]
    missing = [c["heading"] for c in columns if winners[c["key"]] is None]
    if len(wins_a) > len(wins_b):
        overall = f"**{label_a}** comes out ahead"
    elif len(wins_b) > len(wins_a):
        overall = f"**{label_b}** comes out ahead"
    else:
        overall = "neither comes out ahead"
    lead = (f"Of the {len(measured)} metrics computed for both, **{label_a}** is better than **{label_b}** on "
            f"{len(wins_a)}, worse on {len(wins_b)}, and no difference is measured on {len(ties)}: {overall}.")
    if missing:
        lead += f" Not computed: {', '.join(missing)}."
    lines = [lead, ""]
    for column in measured:
        key = column["key"]
        va, vb = float(row_a[key]), float(row_b[key])
        values = f"{_shown(va, key)} vs {_shown(vb, key)}"
        paired = paired_difference(row_a, row_b, key)
        interval = (f"difference {paired[0]:+.4g}, paired 95% interval [{paired[1]:+.4g}, {paired[2]:+.4g}]"
                    if paired is not None else "no per-clip values, compared as printed")
        if winners[key] == TIE:
            lines.append(f"- {column['heading']}: {values}; {interval}: {NO_DIFFERENCE}.")
        else:
            winner = label_a if winners[key] == a else label_b
            lines.append(f"- {column['heading']}: {values}; {interval}: {winner} is better.")
    return "\n".join(lines)


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


def moving_stretch(real: np.ndarray, n_frames: int) -> int:
    """The first frame of the ``n_frames`` consecutive real frames (T, H, W, 3) whose lower halves
    change the most from frame to frame: where the strips show the mouth at work."""
    lower = np.asarray(real[:, real.shape[1] // 2:], dtype=np.float32)
    change = np.abs(np.diff(lower, axis=0)).mean(axis=(1, 2, 3))  # (T-1,)
    if len(real) <= n_frames:
        return 0
    totals = np.convolve(change, np.ones(n_frames - 1), mode="valid") if n_frames > 1 else change
    return int(np.argmax(totals))


def strips_of_clip(data: Mapping[str, np.ndarray], clip: int = 0) -> dict[str, np.ndarray]:
    """One clip's strip from a ``results/frames/<variant>.npz`` file (written by
    :func:`opflowtalker.evaluate.strip_arrays`), under the names :func:`frame_strip_rows` reads:
    ``generated``, ``real``, ``still_index`` and ``clip``."""
    kept = int(np.asarray(data["n_clips"])) if "n_clips" in data else 0
    if not 0 <= clip < kept:
        raise ReportError(f"the frame file keeps {kept} clips (evaluate.strip_clips); there is no clip {clip}")
    return {name: data[f"{name}_{clip}"] for name in ("generated", "real", "still_index", "clip")}


def frame_strip_rows(frames: Mapping[str, Mapping], n_frames: int | None = None, start: int = 0,
                     still: bool = False, mouth: bool = False) -> tuple[list[list[np.ndarray]], list[str]]:
    """Rows of tiles for :func:`opflowtalker.viz.contact_sheet`: the real frames, then (``still``) the
    still-reference control (the real frame at the files' ``still_index`` held), then each variant's
    generated frames (``results/frames/<variant>.npz`` contents, in ``frames``' order), all from frame
    ``start`` and cut to the same length; ``mouth`` keeps the lower half of each face. Returns (rows,
    row names: ``"real"``, ``"still_reference"`` and the variant names)."""
    if not frames:
        raise ReportError("no generated frames to show")
    clips = {str(np.asarray(f["clip"])) for f in frames.values()}
    if len(clips) != 1:
        raise ReportError(f"the frame strips come from different clips ({', '.join(sorted(clips))})")
    first = next(iter(frames.values()))
    real = first["real"]
    n = min(min(len(f["generated"]) for f in frames.values()), len(real))
    if not 0 <= start < n:
        raise ReportError(f"the strips hold {n} frames; cannot start at frame {start}")
    n = n - start if n_frames is None else min(n - start, n_frames)
    rows, names = [list(real[start:start + n])], ["real"]
    if still:
        if "still_index" not in first:
            raise ReportError("these frame files do not say which frame the still reference holds")
        if int(first["still_index"]) >= len(real):
            raise ReportError(f"the still reference holds frame {int(first['still_index'])}, beyond the {len(real)} "
                              "real frames kept (evaluate.strip_frames; 0 keeps them all)")
        rows.append([real[int(first["still_index"])]] * n)
        names.append("still_reference")
    rows += [list(f["generated"][start:start + n]) for f in frames.values()]
    names += list(frames)
    if mouth:
        rows = [[tile[tile.shape[0] // 2:] for tile in row] for row in rows]
    return rows, names


# --- Does a generated mouth move with the speech? (the generate chapter) ---------------------------

def loudness_per_frame(wav: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """RMS of the samples under each video frame (0 past the end of the speech)."""
    hop = int(round(sample_rate / fps))
    return np.array([np.sqrt(np.mean(wav[i * hop:(i + 1) * hop] ** 2)) if i * hop < len(wav) else 0.0
                     for i in range(n_frames)])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-6 and b.std() > 1e-6 else float("nan")


# A frame is silent when its loudness is under this fraction of the loudest frame's.
SILENCE = 0.1


def lip_sync_row(gap: np.ndarray, rms: np.ndarray, fps: float, silence: float = SILENCE) -> dict[str, float]:
    """How a lip gap per frame follows the loudness per frame: r, the best r with the mouth shifted up
    to 0.2 s either way (a mel window spans the next 0.2 s of speech) and that shift, the gap's
    spread, and the mean gap in speech and in silence (frames under ``silence`` of the loudest)."""
    n = min(len(gap), len(rms))
    gap, rms = np.asarray(gap[:n], float), np.asarray(rms[:n], float)
    max_shift = int(round(0.2 * fps))
    shifted = {s: _correlation(gap[max(0, -s):n - max(0, s)], rms[max(0, s):n - max(0, -s)])
               for s in range(-max_shift, max_shift + 1)}
    best = max(shifted, key=lambda s: shifted[s] if np.isfinite(shifted[s]) else -np.inf)
    silent = rms < silence * rms.max()
    return {"r (lip gap, loudness)": _correlation(gap, rms), "best r within ±0.2 s": shifted[best],
            "mouth ahead of sound (ms)": 1000 * best / fps, "lip gap s.d. (px)": gap.std(),
            "mean gap, speech (px)": gap[~silent].mean() if (~silent).any() else float("nan"),
            "mean gap, silence (px)": gap[silent].mean() if silent.any() else float("nan")}


def _strength(r: float) -> str:
    if not np.isfinite(r):
        return "cannot be computed"
    if r >= 0.5:
        return f"is {r:.2f}, clearly positive: the mouth opens with the loud parts"
    if r >= 0.3:
        return f"is {r:.2f}, moderately positive"
    if r >= 0.1:
        return f"is {r:.2f}, weakly positive"
    if r > -0.1:
        return f"is {r:.2f}: no relation to speak of"
    return f"is {r:.2f}, negative: the mouth is more closed when the speech is louder, the opposite of speaking"


def lip_sync_sentence(label: str, row: Mapping[str, float], n_frames: int) -> str:
    """One Markdown sentence on a :func:`lip_sync_row`; a mouth that hardly moves (gap s.d. under
    0.5 px) is said to, whatever its correlation."""
    r, sd = row["r (lip gap, loudness)"], row["lip gap s.d. (px)"]
    if sd < 0.5:
        return (f"**{label}**: the mouth hardly moves (its lip gap varies by {sd:.2f} px, s.d.), so its "
                f"correlation with the loudness (r = {r:.2f}) says little.")
    opens = ("is more open in speech than in the pauses"
             if row["mean gap, speech (px)"] > row["mean gap, silence (px)"] + 0.5 * sd
             else "is not more open in speech than in the pauses")
    ahead = row["mouth ahead of sound (ms)"]
    lead = ("" if ahead == 0 else
            f" (the best match within ±0.2 s is r = {row['best r within ±0.2 s']:.2f}, with the mouth "
            f"{abs(ahead):.0f} ms {'ahead of' if ahead > 0 else 'behind'} the sound)")
    return (f"**{label}**: the correlation of lip gap and loudness over the {n_frames} frames "
            f"{_strength(r)}{lead}; the gap varies by {sd:.1f} px (s.d.) and the mouth {opens}.")


# --- Which audio each mel window hears (the audio chapter) ----------------------------------------

def window_samples(frame: int, fps: float, n_samples: int, params: MelParams = WAV2LIP) -> tuple[int, int]:
    """First and one-past-last sample of the audio that frame ``frame``'s mel window is computed from.

    The window is :func:`opflowtalker.audio.mel_window`'s: steps s..s+15 with s = int(80 frame / fps),
    moved back to the last 16 steps at the end. Step k is a centred STFT frame, samples
    [k hop - n_fft/2, k hop + n_fft/2), so the window spans [s hop - n_fft/2, (s+15) hop + n_fft/2),
    clipped to the audio.
    """
    n_steps = 1 + n_samples // params.hop_size
    start = min(int(mel_steps_per_second(params) * (frame / float(fps))), n_steps - MEL_WINDOW_STEPS)
    first = start * params.hop_size - params.n_fft // 2
    last = (start + MEL_WINDOW_STEPS - 1) * params.hop_size + params.n_fft // 2
    return max(0, first), min(n_samples, last)


def window_loudness(wav: np.ndarray, fps: float, n_frames: int, params: MelParams = WAV2LIP) -> np.ndarray:
    """RMS of the samples under each of the first ``n_frames`` frames' mel windows (:func:`window_samples`)."""
    wav = np.asarray(wav, dtype=np.float64)
    spans = [window_samples(i, fps, len(wav), params) for i in range(n_frames)]
    return np.array([np.sqrt(np.mean(wav[a:b] ** 2)) for a, b in spans])


# --- Do generated faces keep the photo's detail? (the generate chapter) ----------------------------

def sharpness(frames: np.ndarray, region: tuple[int, int, int, int]) -> float:
    """Mean over frames (T, H, W, 3) of the variance of the Laplacian of the grey image inside
    ``region`` (y0, y1, x0, x1): the usual focus measure, which blurring lowers."""
    y0, y1, x0, x1 = region
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    crops = frames[:, y0:y1, x0:x1]
    if crops.size == 0:
        raise ReportError(f"no pixels to measure sharpness on in the region {region}")
    values = [cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY).astype(np.float64),
                            cv2.CV_64F).var() for c in crops]
    return float(np.mean(values))


# Sharpness ratios (generated over photo) read as "as sharp" from here up, "blurred" under BLURRED.
AS_SHARP, BLURRED = 0.8, 0.5


def sharpness_sentence(label: str, ratio: float, region: str = "the lower face", reference: str = "the photo") -> str:
    """One Markdown sentence on a sharpness ratio (:func:`sharpness` of ``label``'s frames over that of
    ``reference``): as sharp from :data:`AS_SHARP` up, blurred under :data:`BLURRED`, softer between,
    and more high-frequency content than the reference (artefacts, not detail) above 1 / AS_SHARP."""
    if not np.isfinite(ratio):
        return f"**{label}**: the sharpness of {region} could not be measured."
    if ratio > 1 / AS_SHARP:
        verdict = (f"more high-frequency content than {reference} there, which is artefacts or noise rather "
                   "than detail")
    elif ratio >= AS_SHARP:
        verdict = f"as sharp as {reference} there"
    elif ratio >= BLURRED:
        verdict = f"softer than {reference} there"
    else:
        verdict = f"blurred: most of the fine detail of {reference} is gone there"
    return (f"**{label}** keeps {ratio:.0%} of the sharpness of {reference} in {region} (variance of the "
            f"Laplacian): {verdict}.")


# ---------------------------------------------------------------------------------------------
# Can we trust the judges? The control rows (metrics/controls) against the bounds a judge must meet.
# ---------------------------------------------------------------------------------------------

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
    lines = [{"claim": claim, "measured": round(float(value), 3), "bound": f"{op} {bound:g}",
              "met": bool(value >= bound if op == ">=" else value <= bound)} for claim, value, op, bound in checks]
    return pd.DataFrame(lines).set_index("claim")


def flow_network_bounds(estimators: Mapping[str, Mapping], ofs_network: str) -> pd.DataFrame:
    """The bounds a flow network is held to before it teaches motion through the OFS loss, measured
    on held-out pairs (``metrics/flow_epe.json``'s ``estimators``): the network in the loss removes
    at least half of the zero flow's error on the mouth, and GMA, the paper's choice, sees the mouth
    at least as well as RAFT."""
    zero = estimators["zero flow"]["epe_mouth"]
    checks = []
    if ofs_network in estimators:
        checks.append((f"{ofs_network} (the OFS loss's network): share of the zero flow's mouth error removed",
                       1 - estimators[ofs_network]["epe_mouth"] / zero, ">=", 0.5))
    if "gma" in estimators and "raft" in estimators:
        checks.append(("GMA's mouth EPE / RAFT's", estimators["gma"]["epe_mouth"] / estimators["raft"]["epe_mouth"],
                       "<=", 1.0))
    if not checks:
        raise ReportError(f"no estimate of {ofs_network!r}, GMA or RAFT to hold to a bound")
    lines = [{"claim": claim, "measured": round(float(value), 3), "bound": f"{op} {bound:g}",
              "met": bool(value >= bound if op == ">=" else value <= bound)} for claim, value, op, bound in checks]
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
    lines = [{"claim": claim, "measured": round(float(value), 3), "bound": f"{op} {bound:g}",
              "met": bool(value >= bound if op == ">=" else value <= bound)} for claim, value, op, bound in checks]
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
    from .metrics.speech import recognition_by_voice

    spoken = truth["speech_per_clip"]
    rows = list(zip(spoken["voice"], spoken["script"], spoken["speech"]))
    clips = pd.Series(spoken["voice"]).value_counts()
    table = pd.DataFrame({"clips": clips, "WER": pd.Series(recognition_by_voice(rows))}).sort_index()
    table.loc["all voices"] = [len(rows), recognition_by_voice([("all", s, t) for _, s, t in rows])["all"]]
    table["clips"] = table["clips"].astype(int)
    return table.rename_axis("voice").round(3)


def sync_judge_verdict(log: Mapping, shift: int) -> str:
    """Markdown: the sync judge's calibration on the validation clips (seen faces, unseen sentences),
    the shifted audio delayed by ``shift`` frames (``train_sync_judge.eval_shift``)."""
    val = log.get("val")
    if not val:
        raise ReportError("the sync judge's log holds no validation calibration")
    return (f"After {log['steps']} steps ({log['seconds'] / 60:.1f} min) the sync judge finds the true offset "
            f"within one frame on {100 * val['offset_within_1']:.0f}% of the {val['clips']} validation clips, and "
            f"the offset of audio delayed by {val.get('shift', shift)} frames on {100 * val['shifted_offset_within_1']:.0f}%; their mean LSE-C is {val['lse_c']:.3f} "
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


def _data_uri(data: bytes, mime: str) -> str:
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def video_html(path: str | Path, width: int = 256, attributes: str = "controls loop") -> str:
    """An HTML ``<video>`` of the mp4 at ``path`` with a WebM source first and the mp4 second, both
    embedded as data URIs, and the first frame as the poster (so the page shows the face before
    it plays). The WebM copy is made in a temporary folder: the mp4's own folder (often a DVC
    output) is left as it is."""
    import tempfile

    from .video import iter_frames, write_webm

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="opflowtalker-webm-") as tmp:
        webm = write_webm(path, Path(tmp) / "clip.webm").read_bytes()
    first = next(iter_frames(path))
    ok, png = cv2.imencode(".png", cv2.cvtColor(first, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ReportError(f"cannot encode the first frame of {path} as a poster")
    return (f'<video width="{int(width)}" {attributes} preload="auto" poster="{_data_uri(png.tobytes(), "image/png")}">'
            f'<source src="{_data_uri(webm, "video/webm")}" type=\'video/webm; codecs="vp9, opus"\'>'
            f'<source src="{_data_uri(path.read_bytes(), "video/mp4")}" type="video/mp4">'
            "Your browser plays neither WebM nor H.264 video.</video>")
