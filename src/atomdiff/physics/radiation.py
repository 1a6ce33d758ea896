"""Radiation: characteristic X-ray lines, doublets and plain wavelengths.

Line energies are from Hölzer et al., Phys. Rev. A 56, 4554 (1997), converted with hc = 12398.4198 eV·Å.
A name without ``1``/``2`` (``CuKa``) means the Kα1 + Kα2 doublet with I(Kα2)/I(Kα1) = 0.5.
"""

from __future__ import annotations

import dataclasses
import math

from atomdiff.errors import InputError

LINES: dict[str, float] = {
    "CuKa1": 1.540593,
    "CuKa2": 1.544414,
    "CuKb1": 1.392250,
    "MoKa1": 0.709317,
    "MoKa2": 0.713607,
    "MoKb1": 0.632303,
    "CoKa1": 1.788996,
    "CoKa2": 1.792835,
    "CrKa1": 2.289726,
    "CrKa2": 2.293651,
    "FeKa1": 1.936041,
    "FeKa2": 1.939973,
    "AgKa1": 0.559422,
    "AgKa2": 0.563813,
}
KA2_KA1_RATIO = 0.5


@dataclasses.dataclass(frozen=True)
class Wavelength:
    """One or more wavelengths (Å) with relative weights; the first is the primary one."""

    values: tuple[float, ...]
    weights: tuple[float, ...] = (1.0,)
    name: str | None = None

    def __post_init__(self) -> None:
        if len(self.values) != len(self.weights) or not self.values:
            raise InputError("wavelength: values and weights must be non-empty and of equal length")
        for v in self.values:
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"wavelength must be a positive number of Å, got {v}")
        for w in self.weights:
            if not (math.isfinite(w) and w >= 0):
                raise InputError(f"wavelength weight must be non-negative, got {w}")

    @property
    def primary(self) -> float:
        return self.values[0]

    def __str__(self) -> str:
        return self.name or ", ".join(f"{v:g} Å" for v in self.values)


def parse_wavelength(spec: str | float | Wavelength) -> Wavelength:
    """``"CuKa1"``, ``"CuKa"`` (doublet), ``"MoKa1"``, ``1.5406`` or ``"0.4579"`` (Å) → :class:`Wavelength`."""
    if isinstance(spec, Wavelength):
        return spec
    if isinstance(spec, int | float):
        return Wavelength((float(spec),), (1.0,))
    text = str(spec).strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return Wavelength((value,), (1.0,))
    key = {k.lower(): k for k in LINES}.get(text.lower().replace("α", "a").replace("alpha", "a"))
    if key is not None:
        return Wavelength((LINES[key],), (1.0,), name=key)
    doublet = {k[:-1].lower(): k[:-1] for k in LINES if k.endswith("a1")}.get(text.lower())
    if doublet is not None:
        return Wavelength(
            (LINES[doublet + "1"], LINES[doublet + "2"]), (1.0, KA2_KA1_RATIO), name=doublet + "1+" + "Ka2"
        )
    names = ", ".join(sorted(LINES) + sorted({k[:-1] for k in LINES if k.endswith("a1")}))
    raise InputError(f"unknown wavelength {text!r}: give a value in Å or one of {names}")
