"""XANES tables as CSV: ``energy_eV``, one ``site_<index>`` column per site, and ``mean`` last."""

from __future__ import annotations

import csv
import os

import numpy as np

from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.xanes.spectra import XanesResult


def write_xanes_csv(path: str | os.PathLike, result: XanesResult) -> None:
    """Write ``result`` as CSV; the file appears whole or not at all."""
    header = ["energy_eV", *(f"site_{s}" for s in result.sites), "mean"]
    table = np.column_stack([result.energy, result.spectra.T, result.mean])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([f"{v:.6g}" for v in row] for row in table)


def read_xanes_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(column names, table)`` of a XANES CSV written by :func:`write_xanes_csv`."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0][:1] != ["energy_eV"]:
        raise InputError("not a XANES table: the first column must be energy_eV", path=str(path))
    try:
        table = np.array([[float(v) for v in row] for row in rows[1:]], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"non-numeric value in XANES table: {exc}", path=str(path)) from None
    return rows[0], table.reshape(-1, len(rows[0]))
