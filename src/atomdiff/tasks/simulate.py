"""Simulate what would be measured for a structure, and write it as files a scientist can use."""

from __future__ import annotations

import csv
import os

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.base import ForwardModel, Pattern
from atomdiff.physics.diffraction import PEAK_COLUMNS, PowderDiffractionModel, peak_table
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.structure import Structure


def simulate(model: ForwardModel, structure: Structure) -> Pattern:
    """Run a forward model on one structure (float64, no gradients)."""
    with torch.no_grad():
        return model(StructureBatch.from_structures([structure]))


def mixture_counts(
    model: ForwardModel, phases: list[tuple[Structure, float]], peak_counts: float, background: float, seed: int
) -> np.ndarray:
    """Counts of a mixture of ``(structure, weight fraction)`` phases: each phase's pattern scaled by
    ``w / (Z M V)`` (Hill–Howard), the sum put at ``peak_counts`` at its strongest point over a flat
    ``background``, with Poisson noise."""
    from atomdiff.tasks.phases import cell_mass

    y = sum(w / (cell_mass(s) * s.volume) * simulate(model, s).y[0] for s, w in phases)
    y = y / y.max() * peak_counts + background
    return np.random.default_rng(seed).poisson(y.numpy()).astype(float)


def normalise_to(y: np.ndarray, top: float = 100.0) -> np.ndarray:
    """Scale so that the maximum is ``top`` (a pattern that is zero everywhere stays zero)."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y * (top / peak) if peak > 0 else y


def add_counting_noise(
    y: np.ndarray, max_counts: float, background: float | np.ndarray = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts for a pattern scaled to ``max_counts`` at its maximum over ``background`` (counts: a
    constant or one value per point).

    Returns ``(counts, sigma)`` with ``sigma = sqrt(max(counts, 1))``.
    """
    if max_counts <= 0:
        raise InputError(f"--counts must be positive, got {max_counts}")
    rng = np.random.default_rng(seed)
    expected = normalise_to(np.clip(y, 0, None), max_counts) + background
    counts = rng.poisson(expected).astype(np.float64)
    return counts, np.sqrt(np.maximum(counts, 1.0))


def write_peak_table(
    model: PowderDiffractionModel, structure: Structure, path: str | os.PathLike
) -> list[dict[str, float | int]]:
    """Write the peak list CSV (columns :data:`PEAK_COLUMNS`) and return its rows."""
    rows = peak_table(model, structure)
    if not rows:
        raise InputError("no reflections fall inside the requested range", path=str(path))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(PEAK_COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    **r,
                    "two_theta": f"{r['two_theta']:.6f}",
                    "d_spacing": f"{r['d_spacing']:.6f}",
                    "intensity": f"{r['intensity']:.4f}",
                }
            )
    return rows
