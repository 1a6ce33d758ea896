"""Structures labelled with per-atom spectra (XANES), read from disk.

Layout (that of the a-C XANES data set of Kwon, Hsu et al. 2024, ``../shared/data/a-C_xanes``)::

    ROOT/poscar/<split>/<name>.vasp     one structure (any format atomdiff reads)
    ROOT/xanes/<split>/<name>.txt       one row per atom, whitespace separated, in the structure's atom order
    ROOT/xanes/<split>/<name>.csv       the same as CSV with a header row of bin labels

Every row holds the spectrum of one atom on a common grid of bins. Rows of an element other than the
absorber may be absent only if the file has exactly one row per absorbing atom.

A CSV whose header starts with ``site`` labels only some atoms: its first column is the index (from 0, in the
structure's atom order) of the absorbing atom each row belongs to. ``atomdiff data xanes --sites-per-structure``
writes such files: FEFF time is better spent on many structures' environments than on every site of a few.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from atomdiff.errors import InputError
from atomdiff.structure.io import read_structure
from atomdiff.structure.structure import Structure

_STRUCTURE_SUFFIXES = (".vasp", ".cif", ".extxyz", ".xyz", ".poscar")


@dataclasses.dataclass(frozen=True)
class SpectrumLabelled:
    """A structure with the spectrum of each absorbing atom.

    Attributes:
        structure: the structure.
        absorbers: ``(k,)`` indices of the atoms that carry a spectrum (all absorbing atoms, or those labelled).
        spectra: ``(k, n_bins)`` one spectrum per labelled absorbing atom.
        name: file stem.
    """

    structure: Structure
    absorbers: np.ndarray
    spectra: np.ndarray
    name: str

    @property
    def mean_spectrum(self) -> np.ndarray:
        """The structure's spectrum: the mean over the labelled absorbing atoms (an estimate when not all are)."""
        return self.spectra.mean(axis=0)


#: first header field of a CSV whose first column holds the labelled atoms' indices
SITE_COLUMN = "site"


def read_spectra_file(path: str | os.PathLike) -> np.ndarray:
    """``(n_rows, n_bins)`` array from a whitespace (``.txt``) or comma (``.csv``, header row) file.

    The index column of a ``site`` CSV (see the module docstring) is not part of the returned spectra.
    """
    return read_site_spectra(path)[1]


def read_site_spectra(path: str | os.PathLike) -> tuple[np.ndarray | None, np.ndarray]:
    """``(sites, spectra)``: the atom index of each row for a ``site`` CSV, else ``None``; ``(n_rows, n_bins)``."""
    path = Path(path)
    csv = path.suffix.lower() == ".csv"
    rows: list[list[float]] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read spectra: {exc.strerror}", path=str(path)) from None
    width = None
    indexed = csv and bool(lines) and lines[0].split(",")[0].strip().strip('"').lower() == SITE_COLUMN
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#") or (csv and number == 1):
            continue
        fields = text.split(",") if csv else text.split()
        try:
            values = [float(x) for x in fields]
        except ValueError:
            raise InputError(
                f"expected {'comma' if csv else 'whitespace'}-separated numbers", path=str(path), line=number
            ) from None
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise InputError(
                f"expected {width} values like the first row, got {len(values)}", path=str(path), line=number
            )
        if not np.all(np.isfinite(values)):
            raise InputError("non-finite spectrum value", path=str(path), line=number)
        rows.append(values)
    if not rows:
        raise InputError("no spectrum rows", path=str(path))
    table = np.asarray(rows, dtype=np.float64)
    if not indexed:
        return None, table
    if table.shape[1] < 2:
        raise InputError("a site CSV needs the site column and at least one spectrum value per row", path=str(path))
    sites = table[:, 0]
    if not np.all(sites == np.round(sites)) or np.any(sites < 0):
        raise InputError("the site column must hold atom indices (whole numbers from 0)", path=str(path))
    sites = sites.astype(np.int64)
    if len(np.unique(sites)) != len(sites):
        raise InputError("a site is listed twice in the site column", path=str(path))
    return sites, table[:, 1:]


def _spectrum_file(root: Path, split: str, name: str) -> Path | None:
    for suffix in (".txt", ".csv"):
        path = root / "xanes" / split / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def read_labelled(
    structure_path: str | os.PathLike, spectra_path: str | os.PathLike, absorber: int = 6
) -> SpectrumLabelled:
    """One structure and its per-atom spectra; rows are matched to the absorbing atoms in order (or by the
    ``site`` column)."""
    structure = read_structure(structure_path)
    sites, spectra = read_site_spectra(spectra_path)
    if sites is not None:
        bad = [int(i) for i in sites if i >= len(structure) or structure.numbers[i] != absorber]
        if bad:
            raise InputError(
                f"site {bad[0]} is not an absorbing atom (Z = {absorber}) of the structure {structure_path} "
                f"({len(structure)} atoms)",
                path=str(spectra_path),
            )
        return SpectrumLabelled(structure, sites, spectra, Path(structure_path).stem)
    absorbers = np.flatnonzero(structure.numbers == absorber)
    if spectra.shape[0] == len(structure) and len(absorbers) != len(structure):
        spectra = spectra[absorbers]
    if spectra.shape[0] != len(absorbers):
        raise InputError(
            f"{spectra.shape[0]} spectrum rows but the structure {structure_path} has {len(absorbers)} absorbing "
            f"atoms (Z = {absorber})",
            path=str(spectra_path),
        )
    return SpectrumLabelled(structure, absorbers, spectra, Path(structure_path).stem)


def read_spectrum_dataset(root: str | os.PathLike, split: str, absorber: int = 6) -> list[SpectrumLabelled]:
    """Every structure of ``ROOT/poscar/<split>`` with its spectra, sorted by name."""
    root = Path(root)
    folder = root / "poscar" / split
    if not folder.is_dir():
        raise InputError(f"no folder poscar/{split} (expected ROOT/poscar/<split>/*.vasp)", path=str(root))
    items = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in _STRUCTURE_SUFFIXES:
            continue
        spectra = _spectrum_file(root, split, path.stem)
        if spectra is None:
            raise InputError(
                f"no spectra for {path.name} (expected xanes/{split}/{path.stem}.txt or .csv)", path=str(root)
            )
        items.append(read_labelled(path, spectra, absorber))
    if not items:
        raise InputError(f"no structures in poscar/{split}", path=str(root))
    widths = {item.spectra.shape[1] for item in items}
    if len(widths) > 1:
        raise InputError(f"spectra of different lengths in one data set: {sorted(widths)}", path=str(root))
    return items


def read_target_spectrum(path: str | os.PathLike, n_bins: int) -> np.ndarray:
    """A target spectrum of ``n_bins`` points from a file, ``(n_bins,)``.

    Accepted: one value per row (``n_bins`` rows); two columns, bin or energy and intensity (``n_bins`` rows;
    the intensity column is used, on the model's grid); or a per-atom table with ``n_bins`` columns (one row per
    atom, as the a-C data set's ``xanes/*.txt``), whose mean over rows is the structure's spectrum.
    """
    table = read_spectra_file(path)
    rows, cols = table.shape
    if cols == n_bins and not (rows == n_bins and cols <= 2):
        return table.mean(axis=0)
    if rows == n_bins and cols in (1, 2):
        return table[:, -1]
    raise InputError(
        f"expected a spectrum of {n_bins} points (one or two columns of {n_bins} rows, or rows of {n_bins} values), "
        f"got a table of {rows} rows × {cols} columns",
        path=str(path),
    )
