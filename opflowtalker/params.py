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

The stage parameter classes have no defaults: ``params.yaml`` is the one source of the study's
values. Callers outside a stage (the tests, the notebooks) build them with :func:`from_params_yaml`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import OpFlowTalkerError

__all__ = ["ParamsError", "StageParams", "load_params", "from_params_yaml", "from_mapping", "merge", "require",
           "PARAMS_YAML"]

T = TypeVar("T")

# The repository's parameters file, beside the package.
PARAMS_YAML = Path(__file__).resolve().parent.parent / "params.yaml"


class ParamsError(OpFlowTalkerError, ValueError):
    """A parameters file or group that cannot be used; one sentence for the user."""


def load_params(path: str | Path = "params.yaml", hd: bool = False, profile: str | None = None) -> dict[str, Any]:
    """The groups of ``path`` under its profile (or ``profile``, instead of the one the file names);
    with ``hd``, as the HDTF-shaped half reads them."""
    data = _load_profiled(Path(path), profile)
    if not hd:
        return data
    half = data.get("hd")
    if not isinstance(half, dict) or not isinstance(half.get("overrides"), dict):
        raise ParamsError(f"{path} has no hd.overrides group: it defines no HDTF-shaped half")
    return merge(data, half["overrides"])


def _load_profiled(path: Path, profile: str | None = None) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"parameters file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path} must hold a mapping of stage groups")
    profiles = data.pop("profiles", None) or {}
    if profile is not None:
        data["profile"] = profile
    profile = data.get("profile")
    if profile is None:
        return data
    if profile not in profiles:
        raise ParamsError(f"{path}: profile {profile!r} is not one of the profiles it defines "
                          f"({', '.join(profiles) or 'none'})")
    return merge(data, profiles[profile] or {})


def from_params_yaml(cls: type[T], group: str, profile: str | None = None, hd: bool = False,
                 path: str | Path = PARAMS_YAML, **overrides: Any) -> T:
    """``cls`` built through :func:`from_mapping` from group ``group`` of ``path`` (the repository's
    ``params.yaml``) under ``profile`` (None: the file's own) and, with ``hd``, the HDTF-shaped half,
    ``overrides`` replacing some of its keys. A dotted group reaches into a nested one
    (``generators.defaults``). What the tests and notebooks build a stage's parameters with, so
    their values not given here are the study's."""
    values: Any = load_params(path, hd=hd, profile=profile)
    for key in group.split("."):
        if not isinstance(values, dict) or key not in values:
            raise ParamsError(f"{path} has no group {group}")
        values = values[key]
    if not isinstance(values, dict):
        raise ParamsError(f"{path}: {group} is not a group of parameters")
    return from_mapping(cls, {**values, **overrides}, f"params.yaml: {group}")


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
    """Build dataclass ``cls`` from ``values``, rejecting keys it does not have, (``complete``)
    fields the values leave out, values of the wrong type and values the class refuses (its
    ``__post_init__``), each in one sentence that names ``where`` and the key. A stage's values so
    come from ``params.yaml`` alone (its parameter classes have no defaults); a model's architecture
    read from a checkpoint passes ``complete=False``, its defaults being the model's."""
    values = dict(values or {})
    where = where or cls.__name__
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ParamsError(f"unknown parameter(s) {', '.join(unknown)} in {where}")
    missing = sorted(known - set(values))
    if complete and missing:
        raise ParamsError(f"{where} lacks parameter(s) {', '.join(missing)}: params.yaml gives every one")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        expected = _accepted_types(hints.get(key))
        if expected and (not isinstance(value, expected) or isinstance(value, bool) and bool not in expected):
            raise ParamsError(f"{where}: {key} takes {_type_words(expected)}, got {value!r}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        raise ParamsError(f"{where}: {error}") from None


def _accepted_types(hint: Any) -> tuple[type, ...]:
    """The Python types a YAML value may have for a field annotated ``hint`` (empty: anything)."""
    if hint is None or hint is Any:
        return ()
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        parts = [_accepted_types(h) for h in typing.get_args(hint)]
        return () if any(not p for p in parts) else tuple(t for p in parts for t in p)
    origin = typing.get_origin(hint) or hint
    if origin is float:
        return (float, int)
    if origin in (tuple, list):
        return (tuple, list)
    if origin is type(None):
        return (type(None),)
    return (origin,) if origin in (int, str, bool, dict) else ()


def _type_words(expected: tuple[type, ...]) -> str:
    words = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
             dict: "a mapping", tuple: "a list", list: "a list", type(None): "null"}
    shown = [t for t in expected if not (t is int and float in expected)]  # a number includes whole ones
    return " or ".join(dict.fromkeys(words[t] for t in shown))


def require(params: Any, above_zero: tuple[str, ...] = (), at_least_zero: tuple[str, ...] = (),
            shares: tuple[str, ...] = (), choices: dict[str, tuple] | None = None) -> None:
    """Refuse, in one sentence naming the field, a value of ``params`` out of its range: counts,
    sizes and rates ``above_zero``, offsets and optional counts ``at_least_zero``, probabilities
    ``shares`` (0 to 1), and names that must be one of ``choices``. Called from a parameters
    class's ``__post_init__``, so the class refuses it wherever it is built."""
    for name in above_zero:
        if not getattr(params, name) > 0:
            raise ParamsError(f"{name} must be above 0, got {getattr(params, name)!r}")
    for name in at_least_zero:
        if not getattr(params, name) >= 0:
            raise ParamsError(f"{name} must be 0 or more, got {getattr(params, name)!r}")
    for name in shares:
        if not 0 <= getattr(params, name) <= 1:
            raise ParamsError(f"{name} must be a share between 0 and 1, got {getattr(params, name)!r}")
    for name, allowed in (choices or {}).items():
        if getattr(params, name) not in allowed:
            raise ParamsError(f"{name} must be one of {', '.join(map(str, allowed))}, got {getattr(params, name)!r}")
