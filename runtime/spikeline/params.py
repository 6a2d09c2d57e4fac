"""Declared parameters: one small schema language shared by the config file, stages, sources and sinks.

Every component declares its parameters as `Param`s; `check_table` validates a TOML table against them,
fills defaults and reports every problem with its key path (`pipeline[1].stages[0].low_hz: ...`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

_MISSING: Any = object()


class ConfigError(Exception):
    """One or more problems in a configuration, each with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _describe(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return repr(v)


@dataclass(frozen=True)
class Param:
    """kind: "number" | "int" | "str" | "bool" | "str_list" | "number_list"."""

    kind: str
    default: Any = _MISSING
    help: str = ""
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: tuple[Any, ...] = ()
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def convert(self, v: Any) -> tuple[Any, str | None]:
        """(value, problem). Accepts ints for numbers; rejects bools for numbers."""
        k = self.kind
        if k == "number":
            if isinstance(v, bool) or not isinstance(v, int | float):
                return None, f"expected a number, got {_describe(v)}"
            v = float(v)
            if not math.isfinite(v):
                return None, f"expected a finite number, got {v}"
        elif k == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                return None, f"expected an integer, got {_describe(v)}"
        elif k == "str":
            if not isinstance(v, str):
                return None, f"expected a string, got {_describe(v)}"
        elif k == "bool":
            if not isinstance(v, bool):
                return None, f"expected true or false, got {_describe(v)}"
        elif k in ("str_list", "number_list"):
            if not isinstance(v, list):
                return None, f"expected an array, got {_describe(v)}"
            item = Param("str" if k == "str_list" else "number")
            out = []
            for i, x in enumerate(v):
                cx, problem = item.convert(x)
                if problem:
                    return None, f"item {i}: {problem}"
                out.append(cx)
            v = out
        else:  # pragma: no cover - programming error in a Param declaration
            raise ValueError(f"unknown Param kind {k!r}")
        if self.min is not None and isinstance(v, int | float) and (
                v < self.min or (self.min_exclusive and v == self.min)):
            op = ">" if self.min_exclusive else ">="
            return None, f"must be {op} {self.min:g}, got {v:g}"
        if self.max is not None and isinstance(v, int | float) and v > self.max:
            return None, f"must be <= {self.max:g}, got {v:g}"
        if self.choices and v not in self.choices:
            return None, f"must be one of {', '.join(map(_describe, self.choices))}; got {_describe(v)}"
        if self.check is not None:
            problem = self.check(v)
            if problem:
                return None, problem
        return v, None


def check_table(table: object, spec: Mapping[str, Param], path: str, problems: list[str],
                ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Validate `table` against `spec`; append problems; return the values with defaults filled in."""
    if not isinstance(table, dict):
        problems.append(f"{path}: expected a table, got {_describe(table)}")
        return {}
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in ignore:
            continue
        p = spec.get(key)
        if p is None:
            near = difflib.get_close_matches(key, list(spec), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            known = ", ".join(sorted(spec)) or "none"
            problems.append(f"{path}.{key}: unknown key{hint}; known keys: {known}")
            continue
        v, problem = p.convert(value)
        if problem:
            problems.append(f"{path}.{key}: {problem}")
        else:
            out[key] = v
    for key, p in spec.items():
        if key not in table:
            if p.required:
                problems.append(f"{path}.{key}: required key is missing" + (f" ({p.help})" if p.help else ""))
            else:
                out[key] = p.default
    return out


class Component:
    """A configurable piece (source, stage, sink): a `type` name, declared parameters, a one-line summary.

    Each family's base class sets `registry`; every subclass with a `kind` registers itself there, which is
    how a config file's `type = "..."` finds its class.
    """

    kind: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}
    summary: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Component]]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            cls.registry[cls.kind] = cls
