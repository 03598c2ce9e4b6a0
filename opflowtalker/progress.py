"""Progress bars for the stages' long loops: on stderr, and only where a person is watching.

A stage run by hand in a terminal shows how far it has got; under ``dvc repro`` with its output
sent to a file, or in CI, stderr is not a terminal and the bars stay off, so logs hold only what
the stages print. ``OPFLOWTALKER_PROGRESS=1`` turns them on anyway (a pager, a log that should
show them), ``OPFLOWTALKER_PROGRESS=0`` turns them off in a terminal. Under torchrun only rank 0
draws one, as only rank 0 reports. A bar only counts the items of its loop, so it never changes
what the loop computes.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

from tqdm import tqdm

__all__ = ["PROGRESS_ENV", "progress", "progress_enabled"]

PROGRESS_ENV = "OPFLOWTALKER_PROGRESS"


def progress_enabled() -> bool:
    """Whether bars are drawn: ``OPFLOWTALKER_PROGRESS`` when set ("0" off, anything else on),
    else when stderr is a terminal; never on a torchrun rank other than 0."""
    if os.environ.get("RANK", "0") != "0":
        return False
    forced = os.environ.get(PROGRESS_ENV, "").strip()
    if forced:
        return forced != "0"
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty is not None and isatty())


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str | None = None,
             unit: str = "it", initial: int = 0) -> tqdm:
    """A tqdm bar on the current stderr over ``iterable`` (or to be advanced with ``update``),
    drawn when :func:`progress_enabled`; a disabled bar passes the items through untouched."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
                disable=not progress_enabled(), dynamic_ncols=True)
