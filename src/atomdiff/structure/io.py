"""Reading and writing structures: CIF, extxyz, POSCAR and CSV-of-CIFs (the CDVAE/DiffCSP dataset files).

Parsing is done by ASE; this module adds a format registry keyed by file name, the CSV-of-CIFs format,
and error messages that name the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.structure.structure import Structure

# name -> ASE format
_ASE_FORMATS = {"cif": "cif", "extxyz": "extxyz", "poscar": "vasp"}


def guess_format(path: str | os.PathLike) -> str:
    """One of ``cif``, ``extxyz``, ``poscar``, ``csv``, ``npz`` from the file name."""
    name = Path(path).name.lower()
    if name.endswith(".cif"):
        return "cif"
    if name.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".vasp", ".poscar")) or name.startswith(("poscar", "contcar")):
        return "poscar"
    raise InputError(
        "cannot tell the structure format from the file name; use .cif, .extxyz/.xyz, .vasp/POSCAR, .csv or .npz",
        path=str(path),
    )


def read_structures(path: str | os.PathLike, format: str | None = None, *, limit: int | None = None) -> list[Structure]:
    """Every structure in a file. ``limit`` reads only the first ``limit`` (CSV, extxyz and npz).

    ``.npz``: atomdiff's compact arrays (:func:`save_structures_npz`), read without parsing text: what a machine
    without ASE (a GPU node) can read, and ~100× faster than a CSV of CIFs."""
    path = Path(path)
    fmt = format or guess_format(path)
    if not path.is_file():
        raise InputError("file not found", path=str(path))
    if fmt == "csv":
        return _read_csv(path, limit)
    if fmt == "npz":
        structures = load_structures_npz(path)
        if structures is None:
            raise InputError("not a file of structures written by atomdiff (.npz of compact arrays)", path=str(path))
        return structures if limit is None else structures[: int(limit)]
    text = path.read_text(errors="replace")
    if not text.strip():
        raise InputError("file is empty", path=str(path))
    if fmt == "cif":
        return _read_cif_text(text, str(path))
    index = ":" if limit is None else f":{int(limit)}"
    return _ase_read(io.StringIO(text), _ASE_FORMATS[fmt], str(path), index)


def read_structure(path: str | os.PathLike, format: str | None = None) -> Structure:
    """The first structure in a file."""
    return read_structures(path, format, limit=1)[0]


def write_structures(
    structures: Structure | list[Structure], path: str | os.PathLike, format: str | None = None
) -> None:
    """Write one or many structures; the file appears only once it is complete."""
    if isinstance(structures, Structure):
        structures = [structures]
    fmt = format or guess_format(path)
    if fmt == "poscar" and len(structures) != 1:
        raise InputError(f"POSCAR holds one structure, got {len(structures)}", path=str(path))
    if fmt == "npz":
        save_structures_npz(structures, path)
        return
    with atomic_path(path) as tmp:
        if fmt == "csv":
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["", "material_id", "cif"])
                for k, s in enumerate(structures):
                    writer.writerow([k, s.info.get("material_id", k), structure_to_cif(s)])
        elif fmt == "cif":
            tmp.write_text("".join(structure_to_cif(s) for s in structures))
        else:
            from ase.io import write

            write(tmp, [s.to_ase() for s in structures], format=_ASE_FORMATS[fmt])


def structure_to_cif(structure: Structure) -> str:
    """P1 CIF text (pymatgen's writer, full precision)."""
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure.to_pymatgen()))


def structure_from_cif(text: str, source: str = "<string>") -> Structure:
    """Parse CIF text holding one structure."""
    return _read_cif_text(text, source)[0]


# --- CIF --------------------------------------------------------------------------------------------------
def _check_cif_loops(text: str, source: str, line_offset: int = 0) -> None:
    """Check that every ``loop_`` holds whole rows: a truncated CIF is reported at its last line.

    ASE and pymatgen silently drop incomplete rows, so a cut-off file would lose atoms unnoticed.
    """
    lines = text.splitlines()
    k = 0
    while k < len(lines):
        if lines[k].strip().lower() != "loop_":
            k += 1
            continue
        k += 1
        tags = []
        while k < len(lines) and lines[k].strip().startswith("_"):
            tags.append(lines[k].strip().split()[0])
            k += 1
        values: list[str] = []
        row_lines: list[int] = []
        while k < len(lines):
            stripped = lines[k].strip()
            if not stripped or stripped.startswith("#"):
                k += 1
                continue
            if stripped.lower() == "loop_" or stripped.startswith(("_", "data_")):
                break
            if stripped.startswith(";"):  # multi-line text field: one value
                k += 1
                while k < len(lines) and not lines[k].startswith(";"):
                    k += 1
                values.append("<text>")
                row_lines.append(k + 1)
                k += 1
                continue
            for token in _cif_tokens(stripped):
                values.append(token)
                row_lines.append(k + 1)
            k += 1
        if tags and len(values) % len(tags):
            line = row_lines[-1] + line_offset if row_lines else k + line_offset
            raise InputError(
                f"CIF loop with {len(tags)} columns ({tags[0]} ...) ends with an incomplete row "
                f"({len(values) % len(tags)} of {len(tags)} values): the file is truncated or malformed",
                path=source,
                line=line,
            )


def _cif_tokens(line: str) -> list[str]:
    return re.findall(r"'[^']*'|\"[^\"]*\"|\S+", line)


def _read_cif_text(text: str, source: str, line_offset: int = 0) -> list[Structure]:
    if "data_" not in text:
        raise InputError("not a CIF file: no 'data_' block", path=source)
    _check_cif_loops(text, source, line_offset)
    structures = _ase_read(io.StringIO(text), "cif", source, ":")
    if not structures:
        raise InputError("CIF holds no structure", path=source)
    return structures


def _ase_read(handle, ase_format: str, source: str, index: str) -> list[Structure]:
    from ase.io import read

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = read(handle, index=index, format=ase_format)
    except InputError:
        raise
    except Exception as exc:  # ASE raises many types; report them as one clear input error
        line = _line_of(exc)
        raise InputError(f"cannot read as {ase_format}: {type(exc).__name__}: {exc}", path=source, line=line) from None
    if not isinstance(images, list):
        images = [images]
    out = []
    for k, atoms in enumerate(images):
        if not all(atoms.pbc) and ase_format != "extxyz":
            atoms.pbc = True
        try:
            s = Structure.from_ase(atoms)
        except InputError as exc:
            raise InputError(f"structure {k}: {exc}", path=source) from None
        out.append(s.replace(info={**s.info, "source": source}))
    return out


def _line_of(exc: Exception) -> int | None:
    m = re.search(r"line (\d+)", str(exc))
    return int(m.group(1)) if m else None


# --- CSV of CIFs ------------------------------------------------------------------------------------------
def _read_csv(path: Path, limit: int | None) -> list[Structure]:
    csv.field_size_limit(sys.maxsize)
    out: list[Structure] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError("file is empty", path=str(path)) from None
        if "cif" not in header:
            raise InputError(f"CSV has no 'cif' column (columns: {', '.join(header)})", path=str(path), line=1)
        col = header.index("cif")
        id_col = header.index("material_id") if "material_id" in header else None
        while limit is None or len(out) < limit:
            line = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not row:
                continue
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} columns, got {len(row)}", path=str(path), line=line)
            s = _read_cif_text(row[col], str(path), line_offset=line - 1)[0]
            info = {"source": str(path), "row": len(out)}
            if id_col is not None:
                info["material_id"] = row[id_col]
            for name, value in zip(header, row, strict=True):
                if name and name not in ("cif", "material_id"):
                    info[name] = _scalar(value)
            out.append(s.replace(info=info))
    return out


def _scalar(value: str):
    try:
        return float(value) if any(c in value for c in ".eE") else int(value)
    except ValueError:
        return value


# --- compact arrays (training caches, stored samples) ------------------------------------------------------
def _scalar_info(structure: Structure) -> str:
    """The structure's scalar ``info`` entries (phase labels, ids, ...) as JSON."""
    return json.dumps({k: v for k, v in structure.info.items() if isinstance(v, str | int | float | bool)})


def save_structures_npz(structures: Sequence[Structure], file: str | os.PathLike, key: str = "") -> None:
    """Write structures as concatenated arrays (numbers, frac, cell, counts, pbc, material ids) and each one's
    scalar ``info`` entries as JSON text."""
    with atomic_path(file) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            key=np.array(key),
            counts=np.array([len(s) for s in structures], dtype=np.int64),
            numbers=np.concatenate([s.numbers for s in structures]).astype(np.int16),
            frac=np.concatenate([s.frac for s in structures]),
            cell=np.stack([s.cell for s in structures]),
            pbc=np.array([s.pbc for s in structures], dtype=bool),
            material_id=np.array([str(s.info.get("material_id", "")) for s in structures]),
            info=np.array([_scalar_info(s) for s in structures]),
        )


def read_npz_key(file: str | os.PathLike) -> str | None:
    """The ``key`` text stored by :func:`save_structures_npz`; ``None`` when the file is not such a file."""
    try:
        with np.load(file, allow_pickle=False) as z:
            return str(z["key"])
    except (OSError, ValueError, KeyError):
        return None


def load_structures_npz(file: str | os.PathLike, key: str | None = None) -> list[Structure] | None:
    """Structures from :func:`save_structures_npz`; ``None`` when ``key`` does not match or the file is bad."""
    try:
        with np.load(file, allow_pickle=False) as z:
            if key is not None and str(z["key"]) != key:
                return None
            counts, numbers, frac, cell = z["counts"], z["numbers"], z["frac"], z["cell"]
            pbc, ids, infos = z["pbc"], z["material_id"], z["info"]
    except (OSError, ValueError, KeyError):
        return None
    offsets = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for b in range(len(counts)):
        sel = slice(offsets[b], offsets[b + 1])
        info = {**json.loads(str(infos[b])), "source": str(file), "row": b}
        if ids[b]:
            info["material_id"] = str(ids[b])
        out.append(Structure(numbers[sel], frac[sel], cell[b], tuple(bool(p) for p in pbc[b]), info))
    return out
