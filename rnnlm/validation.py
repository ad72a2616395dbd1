"""The strict checks of config values: a table's keys and types, a value's range or choice,
the adaptive softmax's cut-offs. Every failure is one `RnnlmError` line naming the key.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from rnnlm.errors import RnnlmError


def checked_section(kind: type, name: str, values: Any) -> Any:
    """The dataclass `kind` of config section `name` from a table, its keys and types checked."""
    if not isinstance(values, dict):
        raise RnnlmError(f"config section {name!r} must be a table")
    hints = typing.get_type_hints(kind)
    for key, value in values.items():
        if key not in hints:
            raise RnnlmError(f"unknown config key {name}.{key}")
        if not _has_type(value, hints[key]):
            raise RnnlmError(f"config key {name}.{key} has the wrong type: {value!r}")
    return kind(**values)


def _has_type(value: Any, hint: Any) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    return isinstance(value, hint)


def parse_cutoffs(text: str) -> tuple[int, ...] | None:
    """ "2000,10000" -> (2000, 10000); None unless increasing positive integers."""
    try:
        cutoffs = tuple(int(part) for part in text.split(",")) if text.strip() else ()
    except ValueError:
        return None
    ok = all(c > 0 for c in cutoffs) and list(cutoffs) == sorted(set(cutoffs))
    return cutoffs if ok else None


def require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise RnnlmError(f"bad config value for {key}: {expected}")


def check_choices(values: Any, section: str, choices_of: dict[str, tuple[str, ...]]) -> None:
    """Each string setting of a section's dataclass `values` one of its choices
    (`config.CHOICES`), or None where None is its default."""
    for key, choices in choices_of.items():
        if not key.startswith(section + "."):
            continue
        name = key.partition(".")[2]
        value = getattr(values, name)
        optional = getattr(type(values), name) is None  # a default of None means "decide later"
        if value not in choices and not (optional and value is None):
            raise RnnlmError(f"bad config value for {key} {value!r}: choose {'|'.join(choices)}")
