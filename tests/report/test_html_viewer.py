"""The offline structure viewer's data: periodic images on the cell faces, and blocks cut out of large cells."""

from __future__ import annotations

import numpy as np

from atomdiff.report.html import block_of, viewer_data
from atomdiff.structure import Structure


def test_small_cells_shown_whole_with_face_images():
    s = Structure(numbers=[6, 6], frac=[[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 3.0)
    assert block_of(s, 1500) == (s, 1.0)
    data = viewer_data(s)
    assert len(data["atoms"]) == 8 + 1  # the corner atom on all 8 corners, the centre once
    assert len(data["edges"]) == 12


def test_large_cells_cut_to_a_corner_block_of_about_the_limit():
    rng = np.random.default_rng(0)
    n = 20000
    s = Structure(numbers=np.full(n, 6), frac=rng.random((n, 3)) + rng.integers(-1, 2, (n, 3)), cell=np.eye(3) * 50.0)
    block, f = block_of(s, 1500)
    assert f == (1500 / n) ** (1 / 3)
    assert abs(len(block) - 1500) < 5 * np.sqrt(1500)
    np.testing.assert_allclose(block.cell, s.cell * f)
    assert not any(block.pbc) and np.all((block.frac >= 0) & (block.frac < 1))
    # the block's atoms are the original atoms, at their original Cartesian positions (wrapped into the cell)
    original = np.mod(s.frac, 1.0) @ s.cell
    assert all(np.isclose(original, xyz).all(axis=1).any() for xyz in block.frac @ block.cell)
    assert len(viewer_data(block, images=False)["atoms"]) == len(block)
