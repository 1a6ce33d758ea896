"""The crystal diffusion model's data statistics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from atomdiff.diffusion.crystal import DataStatistics
from atomdiff.structure import Structure


def test_the_volume_per_atom_of_the_training_cells_is_recorded_or_read_from_the_lattice_statistics():
    """The mean and standard deviation of ln(V/N) over a cubic 5-atom cell, an oblique 2-atom cell and an
    elongated 10-atom cell are recorded; without that record (older models) the mean is read as half the trace of
    the stored log-Gram vector, whatever the cell's shape, and the spread estimated from it is wider."""
    perovskite = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    cubic = Structure([20, 22, 8, 8, 8], perovskite, np.eye(3) * 3.9)
    oblique = Structure([6, 6], [[0, 0, 0], [0.25, 0.25, 0.25]], [[0, 1.8, 1.8], [1.8, 0, 1.8], [1.8, 1.8, 0]])
    long = Structure(
        [20, 22, 8, 8, 8] * 2,
        np.vstack([perovskite, np.add(perovskite, [0, 0, 1])]) / [1, 1, 2],
        np.diag([3.8, 3.8, 7.6]),
    )
    structures = [cubic, oblique, long]
    stats = DataStatistics.from_structures(structures)
    mean, spread = stats.log_volume_per_atom()
    expected = [math.log(abs(np.linalg.det(s.cell)) / len(s)) for s in structures]
    assert mean == pytest.approx(np.mean(expected), abs=1e-9)
    assert spread == pytest.approx(np.std(expected), abs=1e-9)
    older = dataclasses.replace(stats, volume_per_atom=None)
    estimated_mean, estimated_spread = older.log_volume_per_atom()
    assert estimated_mean == pytest.approx(np.mean(expected), abs=1e-9)
    assert estimated_spread > spread


def test_training_cells_are_counted_by_their_primitive_content():
    """A conventional 4-atom fcc cell and a 1-atom primitive one both count as primitive ``Cu``, a rock-salt
    8-atom cell as ``ClNa``. Without the primitive record (older models), a content counts the cells holding a
    whole number of copies of it."""
    fcc = Structure([29] * 4, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], np.eye(3) * 3.61)
    primitive = Structure([29], [[0, 0, 0]], [[0, 1.805, 1.805], [1.805, 0, 1.805], [1.805, 1.805, 0]])
    sites = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    rocksalt = Structure([11] * 4 + [17] * 4, sites + [np.add(p, 0.5) % 1 for p in sites], np.eye(3) * 5.64)
    calls = []
    stats = DataStatistics.from_structures([fcc, primitive, rocksalt], progress=lambda *a: calls.append(a))
    assert stats.primitive_cells == {"Cu": 2, "ClNa": 1}
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert stats.cells == {"Cu4": 1, "Cu": 1, "Cl4Na4": 1}
    assert stats.content_count({29: 1}) == 2 and stats.content_count({29: 4}) == 0
    assert stats.content_count({11: 1, 17: 1}) == 1
    older = dataclasses.replace(stats, primitive_cells={})
    assert older.content_count({29: 1}) == 2 and older.content_count({29: 2}) == 1  # Cu4 holds two Cu2
    assert older.content_count({11: 2, 17: 2}) == 1 and older.content_count({11: 1, 17: 2}) == 0
