"""``params.yaml``: the study's parameters, grouped by stage.

Each stage reads only its own group. Groups are plain mappings here; stages turn the ones they
use into dataclasses, so a typo in a key fails loudly instead of being ignored.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["ParamsError", "load_params", "from_mapping"]

T = TypeVar("T")


class ParamsError(ValueError):
    """A parameters file or group that cannot be used; one sentence for the user."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"parameters file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of stage groups")
    return data


def from_mapping(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``, rejecting keys it does not have."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamsError(f"unknown parameter(s) {', '.join(unknown)} in {where or cls.__name__}")
    return cls(**values)
