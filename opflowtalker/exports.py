"""Public names of a subpackage, exported lazily.

``from opflowtalker.models import Wav2Lip`` works without the subpackage importing every module
up front: each module's ``__all__`` is read from its source (no import), and a name is imported
from its module the first time it is asked for. Importing ``opflowtalker.metrics.text`` therefore
stays as cheap as before, while ``opflowtalker.metrics`` lists every metric.
"""
from __future__ import annotations

import ast
from importlib import import_module
from pathlib import Path
from typing import Callable

__all__ = ["lazy_exports"]


def _declared(path: Path) -> list[str]:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]
    return []


def lazy_exports(package: str, init_file: str) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for the package ``package`` whose ``__init__.py``
    is ``init_file``: every name in the ``__all__`` of its modules (files not starting with ``_``).
    A name two modules both declare is an error, so an export always means one thing."""
    folder = Path(init_file).parent
    owner: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for name in _declared(path):
            if name in owner:
                raise ImportError(f"{package}: {name} is exported by both {owner[name]} and {path.stem}")
            owner[name] = path.stem

    def __getattr__(name: str):
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{owner[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(owner)

    return sorted(owner), __getattr__, __dir__
