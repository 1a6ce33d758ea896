"""Scattering powers of the elements: X-ray atomic form factors and neutron coherent scattering lengths.

Tables come from maintained packages: xraydb (Waasmaier & Kirfel 1995 five-Gaussian f0, the default),
pymatgen (its four-Gaussian fit, offered for comparison with pymatgen's ``XRDCalculator``), and
periodictable (neutron coherent scattering lengths, Sears 1992). They are evaluated here in torch so that
patterns stay differentiable and batched.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.structure.elements import MAX_Z, chemical_symbols

FORM_FACTOR_TABLES = ("xraydb", "pymatgen")


@functools.cache
def _waasmaier_kirfel() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(available, c, a, b)`` with ``f0(s) = c + Σ a_i exp(−b_i s²)``, ``s = sinθ/λ`` in Å⁻¹."""
    import sqlalchemy
    import xraydb

    db = xraydb.get_xraydb()
    table = db.tables["Waasmaier"]
    available = np.zeros(MAX_Z + 1, dtype=bool)
    c = np.zeros(MAX_Z + 1)
    a = np.zeros((MAX_Z + 1, 5))
    b = np.zeros((MAX_Z + 1, 5))
    for row in db.session.execute(sqlalchemy.select(table)).fetchall():
        _, z, element, ion, offset, scale, exponents = row
        if ion != element:  # neutral atoms only
            continue
        available[z] = True
        c[z] = offset
        a[z] = json.loads(scale)
        b[z] = json.loads(exponents)
    return available, c, a, b


@functools.cache
def _pymatgen_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(available, a, b)`` with ``f(s) = Z − 41.78214 s² Σ a_i exp(−b_i s²)`` (pymatgen's XRD table)."""
    import pymatgen.analysis.diffraction.xrd as pmg_xrd

    params = json.loads((Path(pmg_xrd.__file__).parent / "atomic_scattering_params.json").read_text())
    available = np.zeros(MAX_Z + 1, dtype=bool)
    a = np.zeros((MAX_Z + 1, 4))
    b = np.zeros((MAX_Z + 1, 4))
    for symbol, coeffs in params.items():
        if symbol not in chemical_symbols:
            continue
        z = chemical_symbols.index(symbol)
        coeffs = np.asarray(coeffs, dtype=float)
        available[z] = True
        a[z, : len(coeffs)] = coeffs[:, 0]
        b[z, : len(coeffs)] = coeffs[:, 1]
    return available, a, b


def _check_available(numbers: torch.Tensor, available: np.ndarray, what: str) -> None:
    z = torch.unique(numbers).cpu().numpy()
    missing = [int(v) for v in z if not available[int(v)]]
    if missing:
        names = ", ".join(chemical_symbols[v] for v in missing)
        raise InputError(f"no {what} tabulated for {names}")


def xray_form_factor(numbers: torch.Tensor, s: torch.Tensor, table: str = "xraydb") -> torch.Tensor:
    """Atomic X-ray form factor f0 (electrons) for each element and each ``s = sinθ/λ`` (Å⁻¹).

    Args:
        numbers: ``(k,)`` atomic numbers, or ``(b, k)`` with ``s`` of shape ``(b, m)`` (one set of atoms
            per row, e.g. the padded atoms of each structure in a batch).
        s: ``(..., m)`` values of sinθ/λ; any leading shape.
        table: ``"xraydb"`` (Waasmaier–Kirfel) or ``"pymatgen"``.

    Returns:
        ``(..., m, k)`` form factors.
    """
    if numbers.ndim == 2:  # per-row atoms: coefficients (b, 1, k, n) against s² (b, m, 1, 1)
        numbers = numbers.unsqueeze(1)
    s2 = (s * s).unsqueeze(-1)
    if table not in FORM_FACTOR_TABLES:
        raise InputError(f"unknown form-factor table {table!r}; choose one of {', '.join(FORM_FACTOR_TABLES)}")
    available, offset, a, b = _form_factor_tensors(table, s.dtype, s.device)
    idx = numbers.to(s.device)
    if not bool(available[idx].all()):
        _check_available(numbers, available.cpu().numpy(), f"X-ray form factor ({table} table)")
    gaussians = (a[idx] * torch.exp(-b[idx] * s2.unsqueeze(-1))).sum(-1)
    if table == "xraydb":
        return offset[idx] + gaussians
    return offset[idx] - 41.78214 * s2 * gaussians


@functools.cache
def _form_factor_tensors(
    table: str, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(available, offset, a, b)`` indexed by Z; the offset is c (xraydb) or Z (pymatgen's form)."""
    if table == "xraydb":
        available, offset, a, b = _waasmaier_kirfel()
    else:
        available, a, b = _pymatgen_params()
        offset = np.arange(MAX_Z + 1, dtype=np.float64)
    return (
        torch.as_tensor(available, device=device),
        torch.as_tensor(offset, dtype=dtype, device=device),
        torch.as_tensor(a, dtype=dtype, device=device),
        torch.as_tensor(b, dtype=dtype, device=device),
    )


@functools.cache
def _neutron_lengths() -> tuple[np.ndarray, np.ndarray]:
    """``(available, b_c)``: coherent scattering lengths in fm for the natural isotope mixture."""
    import periodictable

    available = np.zeros(MAX_Z + 1, dtype=bool)
    lengths = np.zeros(MAX_Z + 1)
    for z in range(1, MAX_Z + 1):
        try:
            b = periodictable.elements[z].neutron.b_c
        except (AttributeError, KeyError):
            continue
        if b is None or not np.isfinite(b):
            continue
        available[z] = True
        lengths[z] = float(b)
    return available, lengths


def neutron_scattering_length(
    numbers: torch.Tensor, dtype: torch.dtype = torch.float64, overrides=None
) -> torch.Tensor:
    """Coherent neutron scattering length b_c in fm for each atomic number, shape like ``numbers``.

    ``overrides`` maps element symbol → b_c (fm), e.g. for isotopically enriched samples.
    """
    available, lengths = _neutron_lengths()
    available, lengths = available.copy(), lengths.copy()
    for symbol, value in (overrides or {}).items():
        z = chemical_symbols.index(symbol)
        available[z] = True
        lengths[z] = float(value)
    _check_available(numbers, available, "neutron scattering length")
    return torch.as_tensor(lengths[numbers.cpu().numpy()], dtype=dtype, device=numbers.device)


def scattering_power(numbers: Sequence[int], radiation: str, neutron_lengths=None) -> np.ndarray:
    """How strongly each element scatters: the X-ray form factor at zero angle (≈ Z electrons) or the neutron
    coherent scattering length (fm, sign kept), one value per atomic number."""
    z = torch.as_tensor(np.asarray(numbers, dtype=np.int64))
    if radiation == "xray":
        return xray_form_factor(z, torch.zeros(1, dtype=torch.float64))[0].numpy()
    if radiation == "neutron":
        return neutron_scattering_length(z, overrides=neutron_lengths).numpy()
    raise InputError(f"radiation must be 'xray' or 'neutron', got {radiation!r}")


def similar_scatterers(
    numbers: Sequence[int], radiation: str, tolerance: float = 0.05, neutron_lengths=None
) -> list[tuple[int, ...]]:
    """Groups (two or more atomic numbers each, ascending) of the given elements whose scattering powers
    (:func:`scattering_power`) differ by at most ``tolerance`` relative to the larger magnitude — elements the
    data can hardly tell apart on a site (X-rays: Cu/Zn 3.4 %, Hf/Ta 1.4 %; neutrons tell Cu and Zn apart,
    7.7 against 5.7 fm). Linked in a chain: A~B and B~C put A, B, C in one group."""
    if tolerance < 0:
        raise InputError(f"tolerance must be ≥ 0, got {tolerance}")
    elements = sorted({int(z) for z in numbers})
    if len(elements) < 2 or tolerance == 0:
        return []
    power = dict(zip(elements, scattering_power(elements, radiation, neutron_lengths).tolist(), strict=True))
    order = sorted(elements, key=lambda z: power[z])
    groups, current = [], [order[0]]
    for a, b in itertools.pairwise(order):
        pa, pb = power[a], power[b]
        if pa * pb > 0 and abs(pb - pa) <= tolerance * max(abs(pa), abs(pb)):
            current.append(b)
        else:
            groups.append(current)
            current = [b]
    groups.append(current)
    return [tuple(sorted(g)) for g in groups if len(g) > 1]
