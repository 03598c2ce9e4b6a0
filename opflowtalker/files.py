"""Writing results so that a reader never sees half a file: write beside it, then rename."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

__all__ = ["write_text_atomic", "write_json_atomic", "write_npz_atomic", "remove_stale_temporaries"]


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def write_npz_atomic(path: str | Path, arrays: dict[str, np.ndarray], compressed: bool = True) -> Path:
    """Arrays to ``path`` (.npz) through a temporary file beside it, removed whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compressed else np.savez)(fh, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(folder: str | Path) -> int:
    """Remove the temporary files (``.<name>.tmp``, ``.<name>.<pid>.tmp``) that writers killed
    before their rename left under ``folder``; a stage calls it before it writes there again.
    Returns how many it removed."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()] if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
