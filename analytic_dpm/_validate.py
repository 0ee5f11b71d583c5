"""Input checks shared by the public functions.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument, the offending value, the
constraint and what to do instead. Checks run when tables are built, never inside sampling loops.
"""

from __future__ import annotations

import numbers

import numpy as np


def _show(value, limit: int = 6) -> str:
    """A short printable form of ``value`` for error messages."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    flat = arr.ravel()
    head = ", ".join(f"{v:.6g}" if np.issubdtype(arr.dtype, np.floating) else str(v) for v in flat[:limit])
    more = ", ..." if flat.size > limit else ""
    return f"[{head}{more}] (shape {arr.shape})"


def as_int(name: str, value, minimum: int | None = None, fix: str = "") -> int:
    """``value`` as a Python int, rejecting bools, floats with a fraction and values below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}. {fix}".strip())
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}. {fix}".strip())
    return value


def as_float(name: str, value, fix: str = "") -> float:
    """``value`` as a finite Python float."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number; got {value!r}. {fix}".strip()) from None
    if not np.isfinite(out):
        raise ValueError(f"{name} must be finite; got {out}. {fix}".strip())
    return out


def as_float_array(name: str, value, ndim: int = 1, fix: str = "") -> np.ndarray:
    """``value`` as a float64 array of the given number of dimensions (NaN allowed; callers check)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of real numbers; got {value!r}. {fix}".strip()) from None
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-dimensional array; got shape {arr.shape}. {fix}".strip())
    return arr


def choice(name: str, value, options) -> str:
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}.")
    return value


def check_data_range(data_range):
    """``(a, b)`` as floats with a < b, or None (unbounded data): the data range of Theorem 2's eq. 12 and of
    clamping x̂_0."""
    if data_range is None:
        return None
    try:
        a, b = data_range
    except (TypeError, ValueError):
        raise TypeError(f"data_range must be a pair (a, b) or None; got {data_range!r}.") from None
    a, b = as_float("data_range[0]", a), as_float("data_range[1]", b)
    if not a < b:
        raise ValueError(f"data_range must be (a, b) with a < b, e.g. (-1.0, 1.0); got {data_range!r}.")
    return (a, b)
