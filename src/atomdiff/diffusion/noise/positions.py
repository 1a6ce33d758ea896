"""Variance-exploding diffusion of Cartesian positions in a fixed periodic cell (amorphous materials).

``x_σ = x₀ + σ ε`` with a geometric schedule ``σ(t) = σ_min^(1−t) σ_max^t``. ``σ_max`` is a few ångström, not
the size of the cell: once every atom has moved by more than the nearest-neighbour distance the local
structure is gone and the noisy configuration is, to a local network, indistinguishable from uniformly random
positions at the same density. The prior is therefore "uniform positions in the cell", which keeps the model
independent of the cell size (a cell-sized ``σ_max`` would make the score depend on the box). Periodic images
of the Gaussian kernel are neglected: at ``σ_max = 3`` Å and the 10.7–14 Å cells of the training data the
nearest image carries a weight below ``exp(−(L/σ)²/2) < 2·10⁻³``.
"""

from __future__ import annotations

import math

import torch


class PositionNoise:
    """Geometric VE schedule on Cartesian positions."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 3.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1.0 - t) * self.sigma_max**t

    def t_of_sigma(self, sigma: float) -> float:
        return math.log(sigma / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    def schedule(self, steps: int, sigma_start: float | None = None) -> torch.Tensor:
        """``(steps + 1,)`` decreasing noise levels from ``sigma_start`` (default σ_max) to σ_min, then 0."""
        start = self.sigma_max if sigma_start is None else float(sigma_start)
        levels = torch.exp(torch.linspace(math.log(start), math.log(self.sigma_min), steps, dtype=torch.float64))
        return torch.cat([levels, levels.new_zeros(1)])

    def sample_prior(self, cell: torch.Tensor, batch_idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Uniform positions in each atom's cell, ``(n_atoms, 3)`` Cartesian."""
        frac = torch.rand((batch_idx.shape[0], 3), generator=generator, dtype=cell.dtype)
        return torch.einsum("ni,nij->nj", frac, cell[batch_idx])
