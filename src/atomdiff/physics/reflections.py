"""Enumeration of reciprocal-lattice points (hkl) inside a shell, for many cells at once.

The set of reflections is discrete and is found in numpy; everything computed from it afterwards
(d-spacings, angles, structure factors) is torch and differentiable with respect to the cell.
"""

from __future__ import annotations

import numpy as np

_BUCKET = 4  # cells whose index bounds round up to the same multiple of this share one hkl grid


def reciprocal_cell(cell: np.ndarray) -> np.ndarray:
    """Crystallographic reciprocal vectors as rows (no 2π): ``a_i · b_j = δ_ij``. ``cell``: ``(..., 3, 3)``."""
    return np.swapaxes(np.linalg.inv(cell), -1, -2)


def _half_space_grid(n: tuple[int, int, int]) -> np.ndarray:
    """Integer (h, k, l) with |h|≤n0, |k|≤n1, |l|≤n2 that are lexicographically positive (one of ±hkl)."""
    h = np.arange(0, n[0] + 1)
    k = np.arange(-n[1], n[1] + 1)
    l = np.arange(-n[2], n[2] + 1)
    grid = np.stack(np.meshgrid(h, k, l, indexing="ij"), -1).reshape(-1, 3)
    hh, kk, ll = grid.T
    half = (hh > 0) | ((hh == 0) & (kk > 0)) | ((hh == 0) & (kk == 0) & (ll > 0))
    return grid[half]


def enumerate_hkl(cells: np.ndarray, g_min: float, g_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflections with ``g_min ≤ |g| ≤ g_max`` (Å⁻¹, ``|g| = 1/d``) for each cell, one of each Friedel pair.

    Args:
        cells: ``(n_structures, 3, 3)`` lattice vectors as rows, Å.

    Returns:
        ``hkl`` ``(n_structures, n_max, 3)`` int64 padded with zeros, and ``mask`` ``(n_structures, n_max)``.
    """
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 3, 3)
    n_struct = cells.shape[0]
    recip = reciprocal_cell(cells)
    # |h_i| = |g · a_i| ≤ g_max |a_i|
    bounds = np.floor(g_max * np.linalg.norm(cells, axis=2) + 1e-9).astype(np.int64)
    keys = (np.ceil(bounds / _BUCKET) * _BUCKET).astype(np.int64)
    per_struct: list[np.ndarray | None] = [None] * n_struct
    for key in np.unique(keys, axis=0):
        members = np.nonzero((keys == key).all(axis=1))[0]
        grid = _half_space_grid(tuple(int(v) for v in key))
        g = np.einsum("hk,bkj->bhj", grid.astype(np.float64), recip[members])
        g2 = np.einsum("bhj,bhj->bh", g, g)
        inside = (g2 <= g_max * g_max * (1 + 1e-12)) & (g2 >= g_min * g_min * (1 - 1e-12))
        for row, b in enumerate(members):
            per_struct[b] = grid[inside[row]]
    n_max = max(1, max(len(p) for p in per_struct))
    hkl = np.zeros((n_struct, n_max, 3), dtype=np.int64)
    mask = np.zeros((n_struct, n_max), dtype=bool)
    for b, p in enumerate(per_struct):
        hkl[b, : len(p)] = p
        mask[b, : len(p)] = True
    return hkl, mask
