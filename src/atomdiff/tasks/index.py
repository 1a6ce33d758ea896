"""Index a measured powder pattern: its peaks and the unit cells that explain them, written as CSV."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics import indexing
from atomdiff.physics.indexing import MIN_MERIT, SYSTEMS, IndexedCell, Peaks
from atomdiff.physics.radiation import Wavelength, parse_wavelength

PEAK_COLUMNS = ("x", "d", "height", "fwhm", "sigma_x")
CELL_COLUMNS = (
    "rank",
    "system",
    "centring",
    "a",
    "b",
    "c",
    "alpha",
    "beta",
    "gamma",
    "volume",
    "zero_shift",
    "figure_of_merit",
    "lines",
    "unindexed",
)


def index_pattern(
    pattern: MeasuredPattern,
    wavelength: str | float | Wavelength | None,
    *,
    significance: float = 5.0,
    lines: int = 20,
    triclinic_lines: int = 30,
    top: int = 5,
    max_volume: float = 2500.0,
    max_unindexed: int = 2,
    min_merit: float = MIN_MERIT,
    systems: Sequence[str] = SYSTEMS,
) -> tuple[Peaks, list[IndexedCell]]:
    """Peaks of ``pattern`` (2θ or Q) and its best indexing solutions (:mod:`atomdiff.physics.indexing`)."""
    if pattern.axis not in ("two_theta", "q"):
        raise InputError(f"a powder pattern must be on a 2θ or Q axis, not {pattern.axis!r}", path=pattern.source)
    lam = None if pattern.axis == "q" or wavelength is None else parse_wavelength(wavelength)
    try:
        peaks, cells = indexing.index_pattern(
            pattern.x,
            pattern.y,
            pattern.axis,
            lam,
            pattern.sigma,
            significance,
            systems=tuple(systems),
            lines=lines,
            triclinic_lines=triclinic_lines,
            max_volume=max_volume,
            max_unindexed=max_unindexed,
            min_merit=min_merit,
            top=top,
        )
    except InputError as exc:
        raise InputError(str(exc), path=pattern.source) from None
    return peaks, cells


def write_peaks_csv(peaks: Peaks, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(PEAK_COLUMNS)
        for row in zip(peaks.x, peaks.d, peaks.height, peaks.fwhm, peaks.sigma_x, strict=True):
            writer.writerow([f"{v:.6g}" for v in row])


def cell_row(rank: int, cell: IndexedCell) -> dict[str, object]:
    a, b, c = cell.lengths
    alpha, beta, gamma = cell.angles
    return {
        "rank": rank,
        "system": cell.system,
        "centring": cell.centring,
        "a": round(a, 5),
        "b": round(b, 5),
        "c": round(c, 5),
        "alpha": round(alpha, 4),
        "beta": round(beta, 4),
        "gamma": round(gamma, 4),
        "volume": round(cell.volume, 3),
        "zero_shift": round(cell.zero_shift, 5),
        "figure_of_merit": round(cell.m_n, 1),
        "lines": cell.lines,
        "unindexed": cell.unindexed,
    }


def write_cells_csv(cells: Sequence[IndexedCell], path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CELL_COLUMNS))
        writer.writeheader()
        for k, cell in enumerate(cells, 1):
            writer.writerow(cell_row(k, cell))
