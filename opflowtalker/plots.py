"""Training curves and the flow networks' end-point error as flat tables for ``dvc plots show``.

A training run keeps the history inside its JSON log (``training.loop.fit``): parallel lists
``step``, ``loss`` and one per loss term, logged every ``log_every`` steps, and ``eval``, the
validation scores by step. DVC plots read flat records, so each run becomes ``train/<run>.csv``
(one row per logged step) and ``eval/<run>.csv`` (one row per evaluation), ``<run>`` being its
log's path under ``models/`` (``generators/full``). ``metrics/flow_epe.json`` maps estimators to
scores, which DVC cannot plot, so it becomes ``flow_epe.csv``, one row per estimator.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .files import write_text_atomic
from .errors import OpFlowTalkerError

__all__ = ["PlotsError", "JUDGES", "training_runs", "history_rows", "epe_rows", "to_csv", "write_curves"]

JUDGES = ("syncnet", "sync_judge", "lipreader")  # the networks trained before the generators


class PlotsError(OpFlowTalkerError, ValueError):
    """A training log or metrics file whose curves cannot be read; one sentence for the user."""


def training_runs(params: dict) -> list[str]:
    """Every training run of the study by its log's path under ``models/`` without the suffix: the
    judges, the flow networks, then each generator variant of ``params`` (from scratch, then loss
    variants)."""
    from .flow.checkpoints import NETWORKS

    group = params.get("generators") or {}
    variants = [*(group.get("variants") or {}), *(group.get("loss_variants") or {})]
    return [*JUDGES, *(f"flow/{network}" for network in NETWORKS), *(f"generators/{v}" for v in variants)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_step(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def history_rows(history: dict) -> tuple[list[dict], list[dict]]:
    """A run's ``history`` as flat rows: ``{"step", "loss", <other series>...}`` per logged step,
    and ``{"step", <scores>...}`` per evaluation.

    A series shorter than ``step`` began at a later log point (the loop adds a term when it first
    appears), so it fills the last rows and leaves the earlier cells empty (``None``)."""
    if not isinstance(history, dict):
        raise PlotsError("the history is not a mapping")
    steps = history.get("step")
    if not isinstance(steps, list) or not steps or not all(map(_is_step, steps)):
        raise PlotsError("the history has no list of integer steps")
    if "loss" not in history:
        raise PlotsError("the history has no loss")
    names = ["loss", *(k for k in history if k not in ("step", "loss", "eval"))]
    columns: dict[str, list] = {}
    for name in names:
        series = history[name]
        if not isinstance(series, list) or not all(_is_number(v) for v in series):
            raise PlotsError(f"the history's {name!r} is not a list of numbers")
        if len(series) > len(steps):
            raise PlotsError(f"the history's {name!r} has {len(series)} values for {len(steps)} steps")
        columns[name] = [None] * (len(steps) - len(series)) + series
    rows = [{"step": step, **{name: columns[name][i] for name in names}} for i, step in enumerate(steps)]

    evaluations = history.get("eval", [])
    if not isinstance(evaluations, list):
        raise PlotsError("the history's 'eval' is not a list")
    for entry in evaluations:
        if not (isinstance(entry, dict) and _is_step(entry.get("step"))
                and all(_is_number(v) for v in entry.values())):
            raise PlotsError("the history's 'eval' holds an entry that is not numbers by step")
    return rows, [dict(entry) for entry in evaluations]


def epe_rows(result: dict) -> list[dict]:
    """``metrics/flow_epe.json`` as one row per estimator: ``{"estimator", "epe", ...}``, in its order."""
    estimators = result.get("estimators") if isinstance(result, dict) else None
    if not isinstance(estimators, dict):
        raise PlotsError("no mapping of estimators")
    rows = []
    for name, scores in estimators.items():
        if not (isinstance(scores, dict) and _is_number(scores.get("epe")) and all(map(_is_number, scores.values()))):
            raise PlotsError(f"estimator {name!r} has no numeric scores with an 'epe'")
        rows.append({"estimator": name, **scores})
    return rows


def to_csv(rows: list[dict]) -> str:
    """``rows`` as CSV text, with the columns in the order they first appear; ``None`` and NaN are
    empty cells, which the charts leave out."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in row.items()})
    return buffer.getvalue()


def _read_checked(path: Path, tables):
    """``tables(data)`` of the JSON file ``path``; any fault as one :class:`PlotsError` naming it."""
    try:
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PlotsError(f"not valid JSON ({error})") from None
        return tables(data)
    except PlotsError as error:
        raise PlotsError(f"{path}: {error}") from None


def _history_tables(log: dict) -> tuple[list[dict], list[dict]]:
    if not isinstance(log, dict) or "history" not in log:
        raise PlotsError("no training history")
    return history_rows(log["history"])


def write_curves(models: str | Path, out: str | Path, runs: list[str],
                 flow_epe: str | Path | None = None) -> dict[str, list[str]]:
    """Write the curve files of each run in ``runs`` whose log ``models/<run>.json`` exists, and
    ``flow_epe.csv`` from ``flow_epe``, under ``out``; return ``{"written": runs, "missing": runs
    and files not found}``.

    Every file is read and checked before any is written, so a malformed one (a
    :class:`PlotsError` naming it) leaves ``out`` as it was. A missing run's old curve files are
    removed, so no chart shows a run that is not there."""
    models, out = Path(models), Path(out)
    tables: dict[Path, list[dict]] = {}
    stale: list[Path] = []
    written, missing = [], []
    for run in runs:
        log = models / f"{run}.json"
        train_csv, eval_csv = out / "train" / f"{run}.csv", out / "eval" / f"{run}.csv"
        if not log.is_file():
            missing.append(run)
            stale += [train_csv, eval_csv]
            continue
        tables[train_csv], evaluations = _read_checked(log, _history_tables)
        if evaluations:
            tables[eval_csv] = evaluations
        else:
            stale.append(eval_csv)
        written.append(run)
    if flow_epe is not None:
        flow_epe = Path(flow_epe)
        if flow_epe.is_file():
            tables[out / "flow_epe.csv"] = _read_checked(flow_epe, epe_rows)
        else:
            missing.append(str(flow_epe))
            stale.append(out / "flow_epe.csv")
    for path, rows in tables.items():
        write_text_atomic(path, to_csv(rows))
    for path in stale:
        path.unlink(missing_ok=True)
    return {"written": written, "missing": missing}
