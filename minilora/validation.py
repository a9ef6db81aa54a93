"""Checks of user input that say what was wrong: where, the value given, and what is allowed.

Each check raises before the caller changes anything: ``TypeError`` for a value of the wrong
type (a string where a number belongs, ``True`` where a count belongs: ``bool`` is an ``int`` in
Python, but ``lora_alpha=True`` is a mistake, not 1), ``ValueError`` for a value of the right
type outside the allowed range. Each returns the value as a plain Python object (a NumPy
integer from a sweep becomes an ``int``), so it writes to JSON and compares as PEFT's does.
"""
from __future__ import annotations

import math
import numbers
import re

from . import backend


def _show(value) -> str:
    text = repr(value)
    return f"{text[:60]}... ({type(value).__name__})" if len(text) > 60 \
        else f"{text} ({type(value).__name__})"


def fail(where: str, value, allowed: str, kind: type = ValueError):
    """Raise ``kind`` naming ``where``, the value and what is allowed."""
    raise kind(f"{where}: got {_show(value)}; allowed: {allowed}")


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # NumPy's bool too


def check_bool(where: str, value) -> bool:
    if not _is_bool(value):
        fail(where, value, "True or False", TypeError)
    return bool(value)


def check_int(where: str, value, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) with ``low <= value <= high`` (either bound may be None)."""
    allowed = "an integer" + (f" >= {low}" if low is not None else "") \
        + (f" and <= {high}" if high is not None else "")
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        fail(where, value, allowed, TypeError)
    if (low is not None and value < low) or (high is not None and value > high):
        fail(where, value, allowed)
    return int(value)


def check_real(where: str, value, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False):
    """A finite real number (not a bool) within the bounds; ``*_open`` excludes the bound."""
    allowed = "a finite number"
    if low is not None:
        allowed += f" {'>' if low_open else '>='} {low}"
    if high is not None:
        allowed += f" and {'<' if high_open else '<='} {high}"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        fail(where, value, allowed, TypeError)
    if not math.isfinite(value) \
            or (low is not None and (value <= low if low_open else value < low)) \
            or (high is not None and (value >= high if high_open else value > high)):
        fail(where, value, allowed)
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def check_choice(where: str, value, choices: tuple):
    """One of ``choices``, compared with its type (so 1 is not True and True is not 1)."""
    if not any(type(value) is type(c) and value == c for c in choices):
        fail(where, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def check_targets(where: str, targets):
    """None (PEFT's q_proj, v_proj default), one string (a regex, or "all-linear"), or names."""
    if targets is None:
        return ["q_proj", "v_proj"]  # PEFT's default for LLaMA-style models
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as err:
            fail(where, targets, f"a valid regex ({err})")
        return targets
    allowed = 'a list of module names, one regex string, "all-linear" or None'
    if not isinstance(targets, (list, tuple, set, frozenset)) \
            or not all(isinstance(t, str) for t in targets):
        fail(where, targets, allowed, TypeError)
    if not all(targets):  # an empty list is refused at injection, with the names that exist
        fail(where, targets, allowed + " (no empty name)")
    return sorted(targets) if isinstance(targets, (set, frozenset)) else list(targets)


def check_pattern(where: str, patterns, check_value) -> dict:
    """A dict from a module-name regex to a value: each key compiled, each value checked by
    ``check_value(where[key], value)``."""
    if not isinstance(patterns, dict):
        fail(where, patterns, "a dict {module-name regex: value}", TypeError)
    checked = {}
    for key, value in patterns.items():
        if not isinstance(key, str):
            fail(f"{where} key", key, "a string (a regex over module names)", TypeError)
        try:
            re.compile(key)
        except re.error as err:
            fail(f"{where} key", key, f"a valid regex ({err})")
        checked[key] = check_value(f"{where}[{key!r}]", value)
    return checked


def check_token_ids(where: str, idx, block_size: int | None = None):
    """Token ids as a (B, T) integer array with B, T >= 1 (and T <= block_size): a model's
    input, refused with what is allowed (a list, a 1-D sequence, floats, too long)."""
    if isinstance(idx, (list, tuple)) or not hasattr(idx, "shape") or not hasattr(idx, "dtype"):
        fail(where, idx, "a (B, T) array of token ids (use np.array for a list)", TypeError)
    shape, dtype = tuple(idx.shape), backend.dtype_name(idx.dtype)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"{where}: got an array of shape {shape}; allowed: shape (B, T) "
                         f"with B, T >= 1 (for one sequence: idx[None])")
    if "int" not in dtype:
        raise TypeError(f"{where}: got an array of dtype {dtype}; allowed: integer token ids")
    if block_size is not None and shape[1] > block_size:
        raise ValueError(f"{where}: sequence length {shape[1]} exceeds block_size "
                         f"{block_size}; allowed: at most {block_size}")
    return idx
