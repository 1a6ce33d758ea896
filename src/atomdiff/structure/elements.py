"""Element symbols, atomic numbers and masses (from ASE's tables)."""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from atomdiff.errors import InputError

MAX_Z = 118

__all__ = ["MAX_Z", "atomic_masses", "atomic_number", "chemical_symbols", "parse_element_list"]


def atomic_number(symbol: str | int, *, what: str = "element") -> int:
    """Atomic number of an element symbol (``"Cu"``) or a number; :class:`InputError` if unknown."""
    if isinstance(symbol, int | np.integer):
        z = int(symbol)
        if not 1 <= z <= MAX_Z:
            raise InputError(f"unknown {what}: atomic number {z} is outside 1..{MAX_Z}")
        return z
    s = str(symbol).strip()
    if s[:1].isalpha():
        s = s[0].upper() + s[1:].lower()
    z = atomic_numbers.get(s)
    if z is None or z == 0:
        raise InputError(f"unknown {what} '{symbol}': not an element symbol")
    return z


def parse_element_list(text: str, *, what: str = "element") -> list[int]:
    """Parse ``"Cu,Zn,Sn,S"`` into atomic numbers."""
    items = [t for t in (p.strip() for p in text.replace(";", ",").split(",")) if t]
    return [atomic_number(t, what=what) for t in items]
