"""``params.yaml``: the study's parameters, grouped by stage, and the profiles that rescale them.

Each stage reads only its own group. Groups are plain mappings here; stages turn the ones they
use into dataclasses, so a typo in a key fails loudly instead of being ignored.

``profile: <name>`` selects a profile; ``profiles.<name>`` holds only the values that differ from
the groups written out in the file (the default profile, ``embedded``, changes nothing). The
profile's values are merged into the groups key by key, so ``profiles.smoke.train_syncnet.steps``
replaces ``train_syncnet.steps`` and nothing else. Every profile names every group (``{}`` where it
changes nothing): a DVC stage depends on its own groups and on the same groups of the profile, so a
change to one value of a profile reruns only the stages that read its group.

``hd`` describes the HDTF-shaped half of the study (Tables 4 and 5): ``hd.overrides`` holds the
values that differ there (the corpus rendered larger, 256-px crops and generators, its own folders)
and ``load_params(path, hd=True)`` merges them over the groups, after the profile, so the same stage
code runs either half.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import OpFlowTalkerError

__all__ = ["ParamsError", "StageParams", "load_params", "from_mapping", "merge"]

T = TypeVar("T")


class ParamsError(OpFlowTalkerError, ValueError):
    """A parameters file or group that cannot be used; one sentence for the user."""


def load_params(path: str | Path = "params.yaml", hd: bool = False) -> dict[str, Any]:
    """The groups of ``path`` under its profile; with ``hd``, as the HDTF-shaped half reads them."""
    data = _load_profiled(Path(path))
    if not hd:
        return data
    half = data.get("hd")
    if not isinstance(half, dict) or not isinstance(half.get("overrides"), dict):
        raise ParamsError(f"{path} has no hd.overrides group: it defines no HDTF-shaped half")
    return merge(data, half["overrides"])


def _load_profiled(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"parameters file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of stage groups")
    profiles = data.pop("profiles", None) or {}
    profile = data.get("profile")
    if profile is None:
        return data
    if profile not in profiles:
        raise ParamsError(f"{path}: profile {profile!r} is not one of the profiles it defines "
                          f"({', '.join(profiles) or 'none'})")
    return merge(data, profiles[profile] or {})


class StageParams(dict):
    """The groups of ``params.yaml`` one command declared it reads (``stages.PARAMS``). Asking for
    another group is an error rather than a silent default, so a stage cannot read a parameter its
    DVC stage does not depend on."""

    def __init__(self, params: dict[str, Any], groups: tuple[str, ...], who: str):
        super().__init__({group: params[group] for group in groups if group in params})
        self._groups, self._who = frozenset(groups), who

    def _check(self, key: str) -> None:
        if key not in self._groups:
            raise ParamsError(f"{self._who} reads params.yaml group {key!r}, which it does not declare "
                              f"(stages.PARAMS: {', '.join(sorted(self._groups)) or 'none'})")

    def __getitem__(self, key: str) -> Any:
        self._check(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self._check(key)
        return super().get(key, default)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, mapping by mapping (other values are replaced)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_mapping(cls: type[T], values: dict[str, Any] | None, where: str = "", complete: bool = True) -> T:
    """Build dataclass ``cls`` from ``values``, rejecting keys it does not have and (``complete``)
    fields the values leave out. A stage's values so come from ``params.yaml`` alone, never from a
    dataclass's defaults (which serve callers outside a study: the tests, ``generate``); a model's
    architecture read from a checkpoint passes ``complete=False``, its defaults being the model's."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamsError(f"unknown parameter(s) {', '.join(unknown)} in {where or cls.__name__}")
    missing = sorted(known - set(values))
    if complete and missing:
        raise ParamsError(f"{where or cls.__name__} lacks parameter(s) {', '.join(missing)}: "
                          "params.yaml gives every one")
    return cls(**values)
