"""The Structure type, its bridges to ASE and pymatgen, and StructureBatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.errors import InputError
from atomdiff.structure import Structure, StructureBatch
from atomdiff.structure.elements import atomic_number, parse_element_list


def _triclinic(seed: int = 0, n: int = 7) -> Structure:
    rng = np.random.default_rng(seed)
    cell = np.diag([3.9, 5.1, 6.2]) + rng.normal(scale=0.7, size=(3, 3))
    return Structure(rng.integers(1, 90, size=n), rng.random((n, 3)) * 1.4 - 0.2, cell)


def test_ase_round_trip_is_lossless():
    s = _triclinic()
    back = Structure.from_ase(s.to_ase())
    np.testing.assert_array_equal(back.numbers, s.numbers)
    np.testing.assert_allclose(back.frac, s.frac, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(back.cell, s.cell)
    assert back.pbc == s.pbc


def test_pymatgen_round_trip_is_lossless():
    s = _triclinic(1)
    back = Structure.from_pymatgen(s.to_pymatgen())
    np.testing.assert_array_equal(back.numbers, s.numbers)
    np.testing.assert_allclose(back.frac, s.frac, rtol=0, atol=1e-13)
    np.testing.assert_allclose(back.cell, s.cell, rtol=0, atol=1e-13)


def test_derived_quantities():
    diamond = Structure(
        [6, 6], [[0, 0, 0], [0.25, 0.25, 0.25]], 3.567 / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    )
    assert diamond.density == pytest.approx(3.52, abs=0.01)
    assert diamond.volume == pytest.approx(3.567**3 / 4)
    assert diamond.formula == "C2"
    a, b, c, alpha, beta, gamma = diamond.lattice_parameters
    assert a == pytest.approx(3.567 / np.sqrt(2)) and alpha == pytest.approx(60.0)
    sup = diamond.repeat((2, 3, 1))
    assert len(sup) == 12 and sup.volume == pytest.approx(6 * diamond.volume)
    np.testing.assert_allclose(sup.cart[:2], diamond.cart)
    wrapped = diamond.replace(frac=diamond.frac + [1.0, -2.0, 0.5]).wrapped()
    assert ((wrapped.frac >= 0) & (wrapped.frac < 1)).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"numbers": [0], "frac": [[0, 0, 0]], "cell": np.eye(3)}, "unknown element"),
        ({"numbers": [200], "frac": [[0, 0, 0]], "cell": np.eye(3)}, "unknown element"),
        ({"numbers": [1, 1], "frac": [[0, 0, 0]], "cell": np.eye(3)}, "2 atomic numbers but 1 positions"),
        ({"numbers": [1], "frac": [[np.nan, 0, 0]], "cell": np.eye(3)}, "non-finite"),
        ({"numbers": [1], "frac": [[0, 0, 0]], "cell": np.zeros((3, 3))}, "singular"),
        ({"numbers": [1], "frac": [[0, 0, 0]], "cell": np.eye(2)}, "shape"),
    ],
)
def test_invalid_structures_raise(kwargs, message):
    with pytest.raises(InputError, match=message):
        Structure(**kwargs)


def test_structure_is_immutable():
    s = _triclinic()
    with pytest.raises(ValueError):
        s.frac[0, 0] = 1.0


def test_element_parsing():
    assert parse_element_list("Cu, zn,SN;s") == [29, 30, 50, 16]
    with pytest.raises(InputError, match="unknown element 'Xx'"):
        atomic_number("Xx")


def test_batch_round_trip_and_dense_layout():
    structures = [_triclinic(k, n) for k, n in enumerate((3, 7, 1))]
    batch = StructureBatch.from_structures(structures)
    assert len(batch) == 3 and batch.n_atoms.tolist() == [3, 7, 1]
    for a, b in zip(batch.to_structures(), structures, strict=True):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.frac, b.frac)
        np.testing.assert_allclose(a.cell, b.cell)
    torch.testing.assert_close(batch.cart, torch.as_tensor(np.concatenate([s.cart for s in structures])))
    dense = batch.to_dense(batch.numbers, fill=-1)
    assert dense.shape == (3, 7)
    assert dense[0, :3].tolist() == structures[0].numbers.tolist() and dense[0, 3:].eq(-1).all()
    _, mask = batch.dense_index()
    assert mask.sum(1).tolist() == [3, 7, 1]
    torch.testing.assert_close(batch.volume, torch.tensor([s.volume for s in structures], dtype=torch.float64))
