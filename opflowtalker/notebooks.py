"""Executing the chapters' notebooks with papermill and building the Jupyter Book.

Notebooks in ``notebooks/`` are stored without outputs; a DVC stage executes each into
``book/chapters/`` with parameters from ``params.yaml``, and the book renders those executed
copies without running anything itself.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .progress import progress_enabled
from .errors import OpFlowTalkerError

__all__ = ["execute_notebook", "parameterized_copy", "build_book", "NotebookError"]


class NotebookError(OpFlowTalkerError, RuntimeError):
    """A notebook or book that failed to execute or build; one sentence for the user."""


def _hide_default_parameters(path: str) -> None:
    """Keep only the parameters actually used in the rendered chapter: papermill adds them as an
    ``injected-parameters`` cell after the notebook's defaults, which the book need not show."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(nb, path)


def execute_notebook(notebook: str | Path, output: str | Path, parameters: dict[str, Any] | None = None,
                     cwd: str | Path = ".") -> Path:
    """Run ``notebook`` top to bottom (kernel ``python3``) and write the executed copy to ``output``."""
    import papermill

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise FileNotFoundError(2, "notebook not found", str(notebook))
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", prefix=f".{output.stem}-", dir=output.parent)
    os.close(fd)
    try:
        papermill.execute_notebook(
            str(notebook), tmp, parameters=parameters or {}, kernel_name="python3",
            cwd=str(cwd), progress_bar=progress_enabled(),
        )
        _hide_default_parameters(tmp)
        os.replace(tmp, output)
    except papermill.PapermillExecutionError as err:
        raise NotebookError(f"{notebook} failed in cell {err.exec_count}: {err.ename}: {err.evalue}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output


def parameterized_copy(notebook: str | Path, output: str | Path, parameters: dict[str, Any]) -> Path:
    """``notebook`` with ``parameters`` injected after its parameters cell, as papermill would run
    it, but not executed: for opening in JupyterLab with the study's settings."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise NotebookError(f"notebook not found: {notebook}")
    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", prefix=f".{output.stem}-", dir=output.parent)
    os.close(fd)
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output


def _jupyter_book() -> str:
    # The venv's script sits next to its interpreter even when the venv is not activated.
    beside = Path(sys.executable).parent / "jupyter-book"
    found = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if found is None:
        raise NotebookError("jupyter-book is not installed in this environment")
    return found


def build_book(book: str | Path = "book", output: str | Path | None = None) -> Path:
    """Build the HTML book with warnings as errors; returns the folder holding ``index.html``."""
    book = Path(book)
    build = Path(output) if output is not None else book / "_build"
    staging = Path(tempfile.mkdtemp(prefix=".book-", dir=build.parent if build.parent.exists() else None))
    cmd = [
        _jupyter_book(), "build", str(book), "--path-output", str(staging),
        "-W", "-n", "--keep-going", "--builder", "html",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise NotebookError(f"the book in {book} did not build cleanly (warnings are errors; log above)")
        if build.exists():
            shutil.rmtree(build)
        os.replace(staging / "_build", build)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return build / "html"
