"""How numbers are written for people: α in the paper's notation, sizes, durations. One place for each."""

from __future__ import annotations

import math
from fractions import Fraction


def format_alpha(a: float | None) -> str:
    """The paper's notation: 0, 1, and dyadic fractions (1/256, 1/2, 3/4, 63/64); other values as decimals."""
    if a is None:
        return "-"
    a = float(a)
    if a in (0.0, 1.0):
        return str(int(a))
    f = Fraction(a).limit_denominator(1024)
    if float(f) == a and 0 < a < 1 and f.denominator & (f.denominator - 1) == 0:
        return f"{f.numerator}/{f.denominator}"
    return f"{a:g}"


def si(n: float) -> str:
    """1.5M, 34.36B, 2.048k: four significant digits with a unit."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.4g}{unit}"
    return f"{n:g}"


def hms(seconds: float | None) -> str:
    """A duration as 3m05s, 2h07m or 1.5d ('-' when unknown)."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_number(v, digits: int = 4, signed: bool = False) -> str:
    """A table value with ``digits`` decimals (``signed``: always with + or −); very large or small values
    in ``g`` notation; "" for None and NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** -digits):
        return f"{v:+.{digits}g}" if signed else f"{v:.{digits}g}"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"
