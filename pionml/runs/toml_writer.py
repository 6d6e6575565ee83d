"""A small, strict TOML writer for the run's ``config.toml`` (Python's ``tomllib`` reads TOML but
does not write it, and ``tomli_w`` is not a dependency of pionml).

:func:`toml_text` writes the value types a run configuration holds: ``str``, ``int``, ``float``
(``inf``, ``-inf`` and ``nan`` too, as TOML has them), ``bool``, lists of these (nested lists
and inline tables inside lists included), and nested tables (``dict`` with ``str`` keys); numpy
scalars are taken as the Python numbers they are. Anything else, ``None`` included (TOML has no
null: the caller leaves such keys out), an integer outside TOML's 64-bit range or a non-string
key is a :class:`TypeError` or :class:`ValueError` naming the key path. The text reads back
with ``tomllib.loads`` to the same values (tuples come back as lists).

Layout: in every table the plain values come first, then the sub-tables as ``[a.b]`` headers,
and a list whose items are all tables as ``[[a.b]]`` blocks; keys are bare where TOML allows
(letters, digits, ``_`` and ``-``), quoted otherwise.
"""

from __future__ import annotations

import math
import re

import numpy as np

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
#: The escapes TOML's basic strings define; other control characters go as \\uXXXX.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_text(table: dict) -> str:
    """``table`` (a dict with str keys) as TOML text; see the module docstring."""
    if not isinstance(table, dict):
        raise TypeError(f"a TOML document is a table (dict), got {type(table).__name__}")
    lines: list[str] = []
    _table(lines, table, ())
    return "\n".join(lines).strip("\n") + "\n"


def _key(key, path: tuple) -> str:
    if not isinstance(key, str):
        raise TypeError(f"TOML key {key!r} at '{_dotted(path)}' is not a string")
    return key if _BARE_KEY.match(key) else _string(key)


def _dotted(path: tuple) -> str:
    return ".".join(path) or "(top level)"


def _header(path: tuple) -> str:
    return ".".join(_key(k, path[:i]) for i, k in enumerate(path))


def _is_table_list(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, dict) for v in value)


def _table(lines: list, table: dict, path: tuple) -> None:
    """The plain values of ``table`` at ``path``, then its sub-tables and lists of tables."""
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_table_list(value):
            lines.append(f"{_key(key, path)} = {_value(value, path + (key,))}")
    for key, value in table.items():
        sub = path + (key,)
        if isinstance(value, dict):
            lines += ["", f"[{_header(sub)}]"]
            _table(lines, value, sub)
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{_header(sub)}]]"]
                _table(lines, item, sub)


def _value(value, path: tuple) -> str:
    """One value as inline TOML (strings, numbers, booleans, arrays, inline tables)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"TOML value at '{_dotted(path)}': {value} is outside the 64-bit "
                             "integers TOML holds")
        return str(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest round-trip form: '0.1', '1e-05', '3.0'
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, path + (f"[{i}]",)) for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k, path)} = {_value(v, path + (k,))}"
                               for k, v in value.items()) + "}"
    what = "None (TOML has no null: leave the key out)" if value is None else type(value).__name__
    raise TypeError(f"TOML value at '{_dotted(path)}': cannot write {what}")


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
