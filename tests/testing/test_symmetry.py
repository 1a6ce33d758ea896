"""The symmetry helper itself: it accepts symmetric functions and rejects broken ones."""

from __future__ import annotations

import numpy as np
import pytest

from atomdiff.physics.descriptors import min_distance
from atomdiff.structure import Structure
from atomdiff.testing import (
    assert_symmetric,
    change_basis,
    permute,
    random_orthogonal,
    random_unimodular,
    rotate,
    shift,
)


def _structure() -> Structure:
    rng = np.random.default_rng(0)
    return Structure(rng.integers(1, 30, 6), rng.random((6, 3)), np.diag([4.0, 5.0, 6.0]) + rng.normal(0, 0.4, (3, 3)))


def test_transforms_preserve_the_crystal():
    s = _structure()
    rng = np.random.default_rng(1)
    for make in (rotate, shift, permute, change_basis):
        t = make(s, rng)
        assert min_distance(t.structure) == pytest.approx(min_distance(s))
        assert t.structure.volume == pytest.approx(s.volume)
    q = random_orthogonal(rng)
    np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(q) == pytest.approx(-1.0)
    assert abs(round(np.linalg.det(random_unimodular(rng)))) == 1


def test_accepts_symmetric_and_rejects_broken_functions():
    s = _structure()

    def good(x: Structure):
        return {"d": np.array(min_distance(x)), "z": x.numbers.astype(float), "r": x.cart - x.cart.mean(0)}

    assert_symmetric(good, s, {"d": "invariant", "z": "atom_invariant"}, (rotate, shift, permute, change_basis))
    assert_symmetric(good, s, {"r": "atom_vector"}, (rotate, permute))

    def depends_on_orientation(x: Structure):
        return {"a": x.cell[0]}

    with pytest.raises(AssertionError, match="rotation"):
        assert_symmetric(depends_on_orientation, s, {"a": "invariant"}, (rotate,))

    def depends_on_order(x: Structure):
        return {"first": x.frac[0]}

    with pytest.raises(AssertionError, match="permutation"):
        assert_symmetric(depends_on_order, s, {"first": "invariant"}, (permute,))
