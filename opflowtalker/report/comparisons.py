"""Our rows against each other and against the paper's: the tables of ``metrics/tables.json`` as
DataFrames, the better of two variants per column (a difference inside its interval is a tie), and
whether each difference goes the paper's way."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from ..errors import OpFlowTalkerError
from ..metrics.intervals import NO_DIFFERENCE, paired_interval, verdict
from ..tables import format_value

__all__ = ["TIE", "ReportError", "bound_lines", "variant_labels", "table_frame", "unavailable_notes", "missing_rows",
           "paired_difference", "better_of", "winner_mask", "paper_rows", "agreement_with_paper",
           "agreement_sentence", "versus_reference", "table_views", "head_to_head_sentences"]


TIE = "tie"


class ReportError(OpFlowTalkerError, ValueError):
    """Pipeline outputs that the chapter cannot report on; one sentence for the user."""


def bound_lines(checks: Sequence[tuple[str, float, str, float]]) -> list[dict]:
    """One line per ``(claim, measured value, ">=" or "<=", bound)``: the claim, the value rounded
    to three places, the bound as written and whether the value meets it. The chapters' bound tables
    are built from these lines, so every bound is judged by the same comparison."""
    lines = []
    for claim, value, op, bound in checks:
        if op not in (">=", "<="):
            raise ReportError(f"a bound compares with >= or <=, not {op!r}")
        lines.append({"claim": claim, "measured": round(float(value), 3), "bound": f"{op} {bound:g}",
                      "met": bool(value >= bound if op == ">=" else value <= bound)})
    return lines


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

