"""Structure files: round trips, the shared CSV-of-CIFs datasets, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Structure as PmgStructure

from atomdiff.errors import InputError
from atomdiff.structure import Structure, read_structure, read_structures, write_structures
from atomdiff.structure.io import structure_to_cif


def _structures() -> list[Structure]:
    rng = np.random.default_rng(2)
    out = []
    for n in (1, 4, 9):
        cell = np.diag([3.5, 4.2, 5.0]) + rng.normal(scale=0.4, size=(3, 3))
        out.append(Structure(rng.choice([8, 22, 29, 56], size=n), rng.random((n, 3)), cell))
    return out


def _assert_same(a: Structure, b: Structure, atol: float = 1e-6) -> None:
    np.testing.assert_array_equal(a.numbers, b.numbers)
    # CIF keeps lattice parameters, not the orientation: compare metric tensors
    np.testing.assert_allclose(a.cell @ a.cell.T, b.cell @ b.cell.T, atol=atol * 10)
    dfrac = a.frac - b.frac
    np.testing.assert_allclose(dfrac - np.round(dfrac), 0.0, atol=atol)


@pytest.mark.parametrize("name", ["s.cif", "s.extxyz", "s.csv", "s.npz"])
def test_round_trip_many(tmp_path, name):
    structures = _structures()
    write_structures(structures, tmp_path / name)
    back = read_structures(tmp_path / name)
    assert len(back) == len(structures)
    for a, b in zip(back, structures, strict=True):
        _assert_same(a, b)


def test_npz_is_exact_limited_and_refused_when_foreign(tmp_path):
    structures = _structures()
    write_structures(structures, tmp_path / "s.npz")
    back = read_structures(tmp_path / "s.npz", limit=2)
    assert len(back) == 2
    for a, b in zip(back, structures[:2], strict=True):
        np.testing.assert_array_equal(a.frac, b.frac)  # arrays, not text: bit for bit
        np.testing.assert_array_equal(a.cell, b.cell)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not a file of structures written by atomdiff"):
        read_structures(tmp_path / "other.npz")


@pytest.mark.parametrize("name", ["POSCAR", "x.vasp"])
def test_round_trip_poscar(tmp_path, name):
    s = _structures()[2]
    write_structures(s, tmp_path / name)
    _assert_same(read_structure(tmp_path / name), s)


def test_poscar_holds_one_structure(tmp_path):
    with pytest.raises(InputError, match="POSCAR holds one structure"):
        write_structures(_structures(), tmp_path / "POSCAR")


@pytest.mark.parametrize("dataset", ["perov_5", "carbon_24"])
def test_shared_csv_datasets(shared_data, dataset):
    path = shared_data / dataset / "test.csv"
    structures = read_structures(path, limit=10)
    assert len(structures) == 10
    import csv
    import sys

    csv.field_size_limit(sys.maxsize)
    with open(path, newline="") as fh:
        rows = [r for _, r in zip(range(10), csv.DictReader(fh), strict=False)]
    for s, row in zip(structures, rows, strict=True):
        ref = Structure.from_pymatgen(PmgStructure.from_str(row["cif"], fmt="cif"))

        # pymatgen may reorder sites; compare as sorted (Z, wrapped frac) rows
        def rows_of(x):
            w = x.wrapped().frac
            w = np.where(w > 1 - 1e-7, w - 1, w)
            order = np.lexsort((np.round(w[:, 2], 3), np.round(w[:, 1], 3), np.round(w[:, 0], 3), x.numbers))
            return x.numbers[order], w[order]

        (za, fa), (zb, fb) = rows_of(s), rows_of(ref)
        np.testing.assert_array_equal(za, zb)
        np.testing.assert_allclose(fa, fb, atol=1e-7)
        np.testing.assert_allclose(s.lattice_parameters, ref.lattice_parameters, atol=1e-6)
        assert s.info["material_id"] == row["material_id"]


def test_cif_with_symmetry_is_expanded(tmp_path):
    from pymatgen.core import Lattice
    from pymatgen.io.cif import CifWriter

    rocksalt = PmgStructure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = tmp_path / "nacl.cif"
    path.write_text(str(CifWriter(rocksalt, symprec=0.01)))
    s = read_structure(path)
    assert len(s) == 8 and s.formula == "Cl4Na4"


def test_truncated_cif_names_file_and_line(tmp_path):
    text = structure_to_cif(_structures()[2])
    lines = text.rstrip("\n").splitlines()
    last = lines[-1].split()
    lines[-1] = " ".join(last[:4])  # cut the last atom row in the middle
    path = tmp_path / "cut.cif"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert "cut.cif" in str(err.value) and f"line {len(lines)}" in str(err.value)
    assert "truncated" in str(err.value)


def test_malformed_cif_and_unknown_element(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not a cif\n")
    with pytest.raises(InputError, match="bad.cif"):
        read_structure(bad)
    text = structure_to_cif(_structures()[0]).replace(" Ba ", " Xq ").replace(" O ", " Xq ")
    text = text.replace(" Ti ", " Xq ").replace(" Cu ", " Xq ")
    unknown = tmp_path / "unknown.cif"
    unknown.write_text(text)
    with pytest.raises(InputError, match="unknown.cif"):
        read_structure(unknown)


def test_missing_empty_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_structure(tmp_path / "none.cif")
    empty = tmp_path / "empty.cif"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_structure(empty)
    with pytest.raises(InputError, match="cannot tell the structure format"):
        read_structure(tmp_path / "x.pdbx")


def test_csv_errors_name_the_line(tmp_path):
    good = structure_to_cif(_structures()[0])
    path = tmp_path / "d.csv"
    write_structures(_structures(), path)
    text = path.read_text()
    path.write_text(text + '9,"only two columns"\n')
    with pytest.raises(InputError, match="expected 3 columns"):
        read_structures(path)
    nocif = tmp_path / "nocif.csv"
    nocif.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="no 'cif' column"):
        read_structures(nocif)
    assert good


def test_failed_write_keeps_existing_file(tmp_path):
    path = tmp_path / "keep.extxyz"
    path.write_text("original")
    with pytest.raises(InputError):
        write_structures(_structures(), tmp_path / "keep.poscar")  # many into POSCAR: refused before writing
    assert path.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.extxyz"]
