"""The one kind of error a user is shown.

Every error the package raises for input, files or settings it cannot use derives from
:class:`OpFlowTalkerError`, each module naming its own (``VideoError``, ``ParamsError``, ...) so a
caller can catch one kind; the CLI catches the base class and prints the message as one line,
exit status 2, never a traceback. Each keeps the built-in base it had (``ValueError`` for bad
values, ``RuntimeError`` for a missing tool), so ``except ValueError`` still catches it.
"""
from __future__ import annotations

__all__ = ["OpFlowTalkerError"]


class OpFlowTalkerError(Exception):
    """A request the package cannot carry out as asked; the message is one sentence for the user."""
