"""Reading structures labelled with per-atom spectra, and target spectra, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomdiff.data.spectra import read_spectra_file, read_spectrum_dataset, read_target_spectrum
from atomdiff.errors import InputError
from atomdiff.structure import Structure
from atomdiff.structure.io import write_structures


def write_dataset(root: Path, n_cells: int = 2, n_atoms: int = 12, n_bins: int = 8, seed: int = 0) -> None:
    """A tiny data set in the a-C layout: POSCARs and one spectrum row per atom."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (root / "poscar" / split).mkdir(parents=True)
        (root / "xanes" / split).mkdir(parents=True)
        for k in range(n_cells):
            s = Structure(np.full(n_atoms, 6), rng.random((n_atoms, 3)), np.eye(3) * 6.0)
            write_structures([s], root / "poscar" / split / f"c{k}.vasp", format="poscar")
            np.savetxt(root / "xanes" / split / f"c{k}.txt", rng.random((n_atoms, n_bins)), fmt="%.5f")


def test_dataset_is_read_with_one_spectrum_per_atom(tmp_path):
    write_dataset(tmp_path)
    items = read_spectrum_dataset(tmp_path, "train")
    assert [i.name for i in items] == ["c0", "c1"]
    assert items[0].spectra.shape == (12, 8)
    np.testing.assert_allclose(items[0].mean_spectrum, items[0].spectra.mean(0))


def test_row_count_mismatch_names_the_file(tmp_path):
    write_dataset(tmp_path)
    bad = tmp_path / "xanes" / "train" / "c1.txt"
    np.savetxt(bad, np.zeros((5, 8)))
    with pytest.raises(InputError, match="c1.txt.*5 spectrum rows"):
        read_spectrum_dataset(tmp_path, "train")


def test_ragged_rows_and_text_give_the_line(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("1 2 3\n1 2\n")
    with pytest.raises(InputError, match="line 2"):
        read_spectra_file(f)
    f.write_text("1 2 3\n1 x 3\n")
    with pytest.raises(InputError, match="line 2"):
        read_spectra_file(f)


def test_missing_split_and_missing_spectra(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(InputError, match="poscar/val"):
        read_spectrum_dataset(tmp_path, "val")
    (tmp_path / "xanes" / "test" / "c0.txt").unlink()
    with pytest.raises(InputError, match="no spectra for c0.vasp"):
        read_spectrum_dataset(tmp_path, "test")


def test_target_spectrum_formats(tmp_path):
    values = np.linspace(0, 1, 8)
    one = tmp_path / "one.txt"
    np.savetxt(one, values)
    two = tmp_path / "two.txt"
    np.savetxt(two, np.column_stack([np.arange(8), values]))
    table = tmp_path / "atoms.txt"
    np.savetxt(table, np.vstack([values, values + 1.0]))
    np.testing.assert_allclose(read_target_spectrum(one, 8), values)
    np.testing.assert_allclose(read_target_spectrum(two, 8), values)
    np.testing.assert_allclose(read_target_spectrum(table, 8), values + 0.5)
    with pytest.raises(InputError, match="10 points"):
        read_target_spectrum(one, 10)


def test_shared_a_c_data_set_is_read(shared_data):
    root = shared_data / "a-C_xanes"
    train = read_spectrum_dataset(root, "train")
    test = read_spectrum_dataset(root, "test")
    assert len(train) == 25 and len(test) == 5
    assert all(i.spectra.shape == (216, 100) and len(i.structure) == 216 for i in train + test)
    densities = sorted({round(i.structure.density, 1) for i in train})
    assert densities[0] == pytest.approx(1.5, abs=0.05) and densities[-1] == pytest.approx(3.5, abs=0.05)


def test_pdfgetx3_gr_file_is_read_after_its_header(tmp_path):
    from atomdiff.data.patterns import read_pattern

    f = tmp_path / "sample.gr"
    f.write_text(
        "[DEFAULT]\nversion = 2.1\nqmax = 24\n\n#### start data\n#S 1\n#L r($\\AA$)  G($\\AA^{-2}$)\n"
        "0.01 0.1\n0.02 0.2\n0.03 0.15\n"
    )
    p = read_pattern(f)
    assert p.axis == "r"
    np.testing.assert_allclose(p.y, [0.1, 0.2, 0.15])


def test_a_site_csv_labels_the_atoms_it_names_and_bad_site_columns_are_clear_errors(tmp_path):
    write_dataset(tmp_path, n_bins=3)
    path = tmp_path / "xanes" / "train" / "c1.csv"
    (tmp_path / "xanes" / "train" / "c1.txt").unlink()
    path.write_text("site,1,2,3\n7,0.1,0.2,0.3\n2,0.4,0.5,0.6\n")
    item = read_spectrum_dataset(tmp_path, "train")[1]
    assert item.absorbers.tolist() == [7, 2]
    np.testing.assert_allclose(item.spectra, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    np.testing.assert_allclose(read_spectra_file(path), item.spectra)  # the index column is not a bin
    for rows, message in (
        ("12,0.1,0.2,0.3\n", "site 12 is not an absorbing atom"),
        ("1,0.1,0.2,0.3\n1,0.1,0.2,0.3\n", "listed twice"),
        ("1.5,0.1,0.2,0.3\n", "whole numbers"),
        ("-1,0.1,0.2,0.3\n", "whole numbers"),
    ):
        path.write_text("site,1,2,3\n" + rows)
        with pytest.raises(InputError, match=message):
            read_spectrum_dataset(tmp_path, "train")
