"""The crystal diffusion model's data statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atomdiff.diffusion.crystal import DataStatistics
from atomdiff.structure import Structure


def test_the_volume_per_atom_of_the_training_cells_is_read_from_the_lattice_statistics():
    """ln(V/N) is half the trace of the stored log-Gram vector, whatever the cell's shape: the mean over a cubic
    5-atom cell, an oblique 2-atom cell and an elongated 10-atom cell is the mean of their ln(V/N)."""
    perovskite = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    cubic = Structure([20, 22, 8, 8, 8], perovskite, np.eye(3) * 3.9)
    oblique = Structure([6, 6], [[0, 0, 0], [0.25, 0.25, 0.25]], [[0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]])
    long = Structure(
        [20, 22, 8, 8, 8] * 2,
        np.vstack([perovskite, np.add(perovskite, [0, 0, 1])]) / [1, 1, 2],
        np.diag([3.8, 3.8, 7.6]),
    )
    structures = [cubic, oblique, long]
    mean, spread = DataStatistics.from_structures(structures).log_volume_per_atom()
    expected = [math.log(abs(np.linalg.det(s.cell)) / len(s)) for s in structures]
    assert mean == pytest.approx(np.mean(expected), abs=1e-9)
    assert spread > 0
