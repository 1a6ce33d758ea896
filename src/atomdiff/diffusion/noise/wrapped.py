"""Variance-exploding diffusion of fractional coordinates on the 3-torus (wrapped normal kernel)."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

_IMAGES = 4  # lattice images summed for the wrapped normal: |k| ≤ 4 is exact to float64 for σ ≤ 1


def wrapped_normal_score(x: torch.Tensor, sigma: torch.Tensor, images: int = _IMAGES) -> torch.Tensor:
    """∂/∂x log Σ_k N(x + k; 0, σ²), elementwise; ``x`` is the displacement mod 1 and ``sigma`` broadcasts."""
    k = torch.arange(-images, images + 1, dtype=x.dtype, device=x.device)
    d = x.unsqueeze(-1) + k
    s2 = (sigma * sigma).unsqueeze(-1)
    logw = -d * d / (2 * s2)
    w = torch.softmax(logw, dim=-1)
    return -(w * d).sum(-1) / s2.squeeze(-1)


@functools.cache
def _score_norm_table(sigma_min: float, sigma_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log σ grid, E|score|²)`` on 400 points spanning the schedule (computed once per schedule)."""
    grid = np.exp(np.linspace(math.log(sigma_min) - 0.1, math.log(sigma_max) + 0.1, 400))
    return torch.as_tensor(np.log(grid)), torch.as_tensor([WrappedNormalNoise._expected_score_sq(s) for s in grid])


class WrappedNormalNoise:
    """``frac_t = frac_0 + σ(t) ε  (mod 1)`` with ``σ(t) = σ_min^(1−t) σ_max^t``; the prior is uniform.

    The network predicts the score divided by ``sqrt(E|score|²)`` at that σ (DiffCSP's normalisation), so its
    target stays of order one at every noise level.
    """

    def __init__(self, sigma_min: float = 0.005, sigma_max: float = 0.5):
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_sigma_grid, self._score_norm = _score_norm_table(self.sigma_min, self.sigma_max)

    @staticmethod
    def _expected_score_sq(sigma: float) -> float:
        """E over the wrapped normal of score², by quadrature on [-0.5, 0.5)."""
        x = torch.linspace(-0.5, 0.5, 4001, dtype=torch.float64)[:-1]
        s = torch.tensor(sigma, dtype=torch.float64)
        k = torch.arange(-_IMAGES, _IMAGES + 1, dtype=torch.float64)
        p = torch.exp(-((x.unsqueeze(-1) + k) ** 2) / (2 * s * s)).sum(-1)
        p = p / p.sum()
        return float((p * wrapped_normal_score(x, s) ** 2).sum())

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max**t

    def score_norm(self, sigma: torch.Tensor) -> torch.Tensor:
        """``sqrt(E|score|²)`` at ``sigma`` (interpolated in log σ)."""
        grid = self._log_sigma_grid.to(sigma.device)
        table = self._score_norm.to(sigma.device)
        ls = torch.log(sigma).double().clamp(grid[0], grid[-1])
        idx = torch.searchsorted(grid, ls).clamp(1, len(grid) - 1)
        x0, x1 = grid[idx - 1], grid[idx]
        y0, y1 = table[idx - 1], table[idx]
        val = y0 + (y1 - y0) * (ls - x0) / (x1 - x0)
        return torch.sqrt(val).to(sigma.dtype)

    def sample_prior(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        return torch.rand(n, 3, generator=generator, dtype=dtype)

    def sample_marginal(
        self, frac0: torch.Tensor, sigma_atom: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frac_t, normalised target score)``; ``sigma_atom`` is ``(n_atoms, 1)``."""
        eps = torch.randn(frac0.shape, generator=generator, dtype=frac0.dtype).to(frac0.device)
        disp = sigma_atom * eps
        frac_t = torch.remainder(frac0 + disp, 1.0)
        target = wrapped_normal_score(disp, sigma_atom) / self.score_norm(sigma_atom)
        return frac_t, target

    def g2(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient ``dσ²/dt``."""
        s = self.sigma(t)
        return 2 * s * s * math.log(self.sigma_max / self.sigma_min)

    def reverse_step(
        self, frac: torch.Tensor, score: torch.Tensor, t: float, dt: float, generator=None, ode: bool = False
    ) -> torch.Tensor:
        """One Euler–Maruyama step of the reverse SDE (or the probability-flow ODE) from t to t − dt."""
        g2 = float(self.g2(torch.tensor(t)))
        if ode:
            return torch.remainder(frac + 0.5 * g2 * score * dt, 1.0)
        z = torch.randn(frac.shape, generator=generator, dtype=frac.dtype)
        return torch.remainder(frac + g2 * score * dt + math.sqrt(g2 * dt) * z, 1.0)

    def langevin_step(
        self, frac: torch.Tensor, score: torch.Tensor, t: float, snr: float = 0.2, generator=None
    ) -> torch.Tensor:
        """Langevin corrector at fixed t with step ``2 (snr·σ)²``-style sizing against the score norm."""
        sigma = float(self.sigma(torch.tensor(t)))
        step = 2 * (snr * sigma) ** 2
        z = torch.randn(frac.shape, generator=generator, dtype=frac.dtype)
        return torch.remainder(frac + step * score + math.sqrt(2 * step) * z, 1.0)
