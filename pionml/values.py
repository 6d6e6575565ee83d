"""Typed configuration values: the one check of every number a command line option or a dataset
recipe gives (seeds, event counts, energies, the cluster selection, process counts).

Each check takes a value (a number, or for the command line the text argparse hands over,
through :func:`argparse_type`) and returns it in its type, or raises :class:`ValueError` with a
short reason ("must be >= 0, got -1"). The command line turns the reason into an argparse error
(exit 2, one line); a recipe (:mod:`pionml.builder.recipe`) into a
:class:`~pionml.errors.ConfigError` naming the recipe file, the key and the value (exit 1).
So ``--seed 1.7`` and ``seed = 1.7`` in a recipe are refused by the same function.

Values from a file (TOML) are typed already: a string where a number is expected is refused
(``seed = "12"``), as is a bool (``true`` is not 1) and a float where an integer is expected
(``seed = 1.7`` is never truncated).
"""

from __future__ import annotations

import argparse
import math
import numbers


#: Seeds are 32-bit unsigned integers: what numpy's legacy seeding and every pionml seed
#: derivation (split hash, simulation batch seeds) take without loss.
SEED_MAX = 2**32 - 1
#: A particle or cluster energy above this (GeV) is beyond any LHC collision (100 TeV); the
#: builder counts such a value as bad data (:data:`pionml.builder.builder.ENERGY_MAX`).
ENERGY_MAX = 1.0e5


# --- the kinds ------------------------------------------------------------------------------
def _kind_name(kind) -> str:
    return "an integer" if kind is int else "a number"


def parse(text: str, kind):
    """Command-line text as ``kind`` (int or float); ValueError with the reason otherwise."""
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"'{text}' is not {_kind_name(kind)}") from None


def integer(value) -> int:
    """An integer: an int, not a bool. A float (1.7, also 2.0) or a string is refused, never
    truncated or parsed (the command line parses its text first, :func:`argparse_type`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def number(value) -> float:
    """A finite number: an int or float, not a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{value!r} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return value


def _at_least(convert, low, strict: bool, doc: str, high=None):
    """A check: ``convert(value)`` above ``low`` (``strict``) or at least ``low``, and at most
    ``high`` when given."""

    def show(x):  # integers in full (2147483647, not 2.14748e+09)
        return str(x) if isinstance(x, int) else f"{x:g}"

    def check(value):
        v = convert(value)
        if v < low or (strict and v == low):
            raise ValueError(f"must be {'>' if strict else '>='} {show(low)}, got {show(v)}")
        if high is not None and v > high:
            raise ValueError(f"must be <= {show(high)}, got {show(v)}")
        return v

    check.__doc__ = doc
    check.kind = int if convert is integer else float
    return check


def finite_float(value) -> float:
    """Any finite number."""
    return number(value)


integer.kind, number.kind, finite_float.kind = int, float, float
positive_int = _at_least(integer, 1, False, "An integer >= 1.")
non_negative_int = _at_least(integer, 0, False, "An integer >= 0.")
positive_float = _at_least(number, 0, True, "A finite number > 0.")
non_negative_float = _at_least(number, 0, False, "A finite number >= 0.")
#: A particle energy (GeV) for the simulation: > 0 and at most :data:`ENERGY_MAX`.
energy = _at_least(number, 0, True, f"A particle energy in GeV: > 0 and <= {ENERGY_MAX:g}.",
                   high=ENERGY_MAX)


#: Events of one simulation (one file): an event number fits 32 bits, and the list of event
#: batches stays small.
EVENTS_MAX = 2**31 - 1
event_count = _at_least(integer, 1, False, f"A number of events: 1 to {EVENTS_MAX}.",
                        high=EVENTS_MAX)


def seed(value) -> int:
    """A random seed: an integer 0 <= seed <= 2**32 - 1."""
    v = integer(value)
    if not 0 <= v <= SEED_MAX:
        raise ValueError(f"a seed must be an integer from 0 to 2**32 - 1, got {v}")
    return v


seed.kind = int


def boolean(value) -> bool:
    """true or false (a file's bool; 1, "yes" and the like are refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def text(value) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a non-empty string")
    return value


# --- the cluster selection (design.md section 4) ----------------------------------------------
#: The checks of the cluster selection, by key (:class:`pionml.builder.builder.Selection`,
#: ``build --eta-max/--min-calib/--min-em``, a recipe's ``[selection]``). ``min_em`` >= 0: the
#: classifiers and regressors take log(E_EM), so a cluster with E_EM <= 0 is never kept.
SELECTION = {"eta_max": positive_float, "min_calib": non_negative_float,
             "min_em": non_negative_float}


#: The images' cell-energy cut (``build --image-min-fraction``, a recipe's ``[build]
#: image_min_fraction``): a fraction of the cluster energy in [0, 1); 0 images every cell with
#: E > 0.
def cell_fraction(value) -> float:
    """A fraction of the cluster energy: 0 <= f < 1."""
    try:
        v = number(value)
    except ValueError as exc:
        v, why = None, str(exc)
    if v is None or not 0.0 <= v < 1.0:
        got = why if v is None else f"got {v:g}"
        raise ValueError(f"must be a number in [0, 1) (a fraction of the cluster energy): {got}")
    return v


cell_fraction.kind = float


# --- command line ------------------------------------------------------------------------------
def argparse_type(check, name: str | None = None):
    """The argparse ``type=`` of a check: the text parsed as the check's ``kind`` (int or
    float) and checked, a bad value an argparse error (one line, exit 2) with the reason."""

    def convert(text: str):
        try:
            return check(parse(text.strip(), check.kind))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name or getattr(check, "__name__", "value")
    convert.__doc__ = check.__doc__
    return convert


seed_arg = argparse_type(seed, "seed")
