"""Enumeration of reciprocal-lattice points (hkl) inside a shell, for many cells at once.

The set of reflections is discrete and is found in numpy; everything computed from it afterwards
(d-spacings, angles, structure factors) is torch and differentiable with respect to the cell.
"""

from __future__ import annotations

import numpy as np

from atomdiff.errors import InputError

_BUCKET = 4  # cells whose index bounds round up to the same multiple of this share one hkl grid
_MAX_GRID = 20_000_000  # candidate hkl of one cell; more means a cell of ~10⁵ Å³ or more at this resolution


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
        ``hkl`` ``(n_reflections, 3)`` int64 and ``batch_idx`` ``(n_reflections,)``: the reflections of all
        cells concatenated in cell order.
    """
    cells = np.asarray(cells, dtype=np.float64).reshape(-1, 3, 3)
    recip = reciprocal_cell(cells)
    # |h_i| = |g · a_i| ≤ g_max |a_i|
    bounds = np.floor(g_max * np.linalg.norm(cells, axis=2) + 1e-9).astype(np.int64)
    keys = (np.ceil(bounds / _BUCKET) * _BUCKET).astype(np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (members, hkl (m, r, 3), mask (m, r))
    for key in np.unique(keys, axis=0):
        if (key[0] + 1) * (2 * key[1] + 1) * (2 * key[2] + 1) > _MAX_GRID:
            raise InputError(
                f"a cell with lattice vectors of {np.linalg.norm(cells, axis=2).max():.4g} Å has too many "
                f"reflections up to 1/d = {g_max:.4g} Å⁻¹ (index bounds {tuple(int(v) for v in key)})"
            )
        members = np.nonzero((keys == key).all(axis=1))[0]
        grid = _half_space_grid(tuple(int(v) for v in key))
        # |g|² = hᵀ G* h with the reciprocal metric G*: one matrix product over the six monomials
        metric = recip[members] @ np.swapaxes(recip[members], -1, -2)
        coeff = np.stack(
            [
                metric[:, 0, 0],
                metric[:, 1, 1],
                metric[:, 2, 2],
                2 * metric[:, 0, 1],
                2 * metric[:, 0, 2],
                2 * metric[:, 1, 2],
            ],
            axis=1,
        )
        h, k, l = grid.T.astype(np.float64)
        g2 = coeff @ np.stack([h * h, k * k, l * l, h * k, h * l, k * l])
        inside = (g2 <= g_max * g_max * (1 + 1e-12)) & (g2 >= g_min * g_min * (1 - 1e-12))
        counts = inside.sum(1)
        width = int(counts.max()) if counts.size else 0
        # move each row's hits to its front, keeping grid order
        order = np.argsort(~inside, axis=1, kind="stable")[:, :width]
        found.append((members, grid[order], np.arange(width)[None, :] < counts[:, None]))
    hkl_parts = [np.zeros((0, 3), dtype=np.int64)]
    idx_parts = [np.zeros(0, dtype=np.int64)]
    for members, h, m in found:
        hkl_parts.append(h[m])
        idx_parts.append(np.broadcast_to(members[:, None], m.shape)[m])
    hkl = np.concatenate(hkl_parts)
    batch_idx = np.concatenate(idx_parts)
    order = np.argsort(batch_idx, kind="stable")
    return hkl[order], batch_idx[order]
