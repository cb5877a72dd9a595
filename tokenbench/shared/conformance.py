"""Whether a value read from outside (a JSON file) has the shape its type annotation says, and if
not, where it goes wrong: what lets a reader use a document without a traceback on one odd value.

It knows what JSON documents hold: str, int, float (any finite JSON number; a bool is neither),
bool, None, unions, list[X], dict[str, X], TypedDicts (their required keys, and NotRequired ones
when present; unknown keys are allowed) and Any.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from typing import Any, NotRequired, TypeGuard, Union, get_args, get_origin, get_type_hints, is_typeddict

_SHOWN_CHARS = 60


def problem_with(value: Any, annotation: Any, where: str = "") -> str | None:
    """Why ``value`` does not fit ``annotation`` ("results[3].ttft_ms is 'fast', not a number"), or None."""
    if annotation is Any:
        return None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is NotRequired:
        return problem_with(value, args[0], where)
    if origin in (Union, types.UnionType):
        problems = [problem_with(value, arg, where) for arg in args]
        if None in problems:
            return None
        # the problem of the one non-None member when there is one (a missing number, not "not None")
        members = [p for arg, p in zip(args, problems) if arg is not type(None)]
        return members[0] if len(members) == 1 else _not(value, where, " or ".join(map(_name, args)))
    if is_typeddict(annotation):
        return _typeddict_problem(value, annotation, where)
    if origin in (list, Sequence):
        if not isinstance(value, list):
            return _not(value, where, "a list")
        return next((p for i, item in enumerate(value) if (p := problem_with(item, args[0], f"{where}[{i}]"))),
                    None)
    if origin is dict:
        if not isinstance(value, dict):
            return _not(value, where, "an object")
        return next((p for key, item in value.items() if (p := problem_with(item, args[1], _key(where, key)))),
                    None)
    check, name = _SCALARS[annotation]
    return None if check(value) else _not(value, where, name)


def _typeddict_problem(value: Any, annotation: Any, where: str) -> str | None:
    if not isinstance(value, dict):
        return _not(value, where, "an object")
    for key in sorted(annotation.__required_keys__ - value.keys()):
        return f"{_key(where, key)} is missing"
    for key, hint in get_type_hints(annotation).items():
        if key in value and (problem := problem_with(value[key], hint, _key(where, key))):
            return problem
    return None


def is_finite_number(value: Any) -> TypeGuard[int | float]:
    """A JSON number that is finite (a bool is none; NaN and the infinities are no JSON)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_SCALARS: dict[Any, tuple[Any, str]] = {
    str: (lambda v: isinstance(v, str), "a string"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (is_finite_number, "a number"),
    bool: (lambda v: isinstance(v, bool), "true or false"),
    type(None): (lambda v: v is None, "null"),
}


def _name(annotation: Any) -> str:
    if annotation in _SCALARS:
        return _SCALARS[annotation][1]
    return "an object" if is_typeddict(annotation) or get_origin(annotation) is dict else "a list"


def _key(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _not(value: Any, where: str, wanted: str) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= _SHOWN_CHARS else shown[:_SHOWN_CHARS] + "..."
    return f"{where or 'the document'} is {shown}, not {wanted}"
