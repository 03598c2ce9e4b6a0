"""Process pools whose workers die with the stage that started them.

A stage killed with ``kill -9`` cannot stop its workers, and a worker of Python's process pool
waits for work forever once its parent is gone, holding the stage's output pipes open and, for the
corpus, rendering into a folder the rerun removes. On Linux each worker therefore asks the kernel
to kill it when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere it checks at start only.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

__all__ = ["worker_pool"]

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int, initializer: Callable[[], None] | None) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)
    if initializer is not None:
        initializer()


def worker_pool(workers: int, initializer: Callable[[], None] | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes, each running ``initializer`` (a module-level
    function) first, that end when the process that made the pool ends, however it ends."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(), initializer))
