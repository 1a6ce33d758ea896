"""Diffusion of the lattice on a rotation-invariant parameterisation.

A cell ``L`` (rows are lattice vectors) is represented by the Gram matrix ``G = L Lᵀ``, which does not change
when the crystal is rotated. We diffuse ``x = vech(log(G / n^(2/3)))`` (the six independent entries of the
matrix logarithm of the size-normalised Gram matrix), standardised with data statistics, by a
variance-preserving process. Every real symmetric ``x`` maps back to a valid cell: ``L = exp(x/2)·n^(1/3)``
(the symmetric square root of ``G``), so sampling never produces a degenerate lattice.
"""

from __future__ import annotations

import math

import torch

_IU = (torch.tensor([0, 1, 2, 0, 0, 1]), torch.tensor([0, 1, 2, 1, 2, 2]))
_OFFDIAG_SCALE = math.sqrt(2.0)  # so that |vech|² = |matrix|²_F


def _sym_fn(mat: torch.Tensor, fn) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(mat)
    return evecs @ torch.diag_embed(fn(evals)) @ evecs.transpose(-1, -2)


def vech(mat: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` symmetric → ``(..., 6)`` (diagonal, then √2 × upper off-diagonal)."""
    v = mat[..., _IU[0], _IU[1]]
    return torch.cat([v[..., :3], v[..., 3:] * _OFFDIAG_SCALE], -1)


def unvech(v: torch.Tensor) -> torch.Tensor:
    out = v.new_zeros(*v.shape[:-1], 3, 3)
    out[..., _IU[0][:3], _IU[1][:3]] = v[..., :3]
    off = v[..., 3:] / _OFFDIAG_SCALE
    out[..., _IU[0][3:], _IU[1][3:]] = off
    out[..., _IU[1][3:], _IU[0][3:]] = off
    return out


def cell_to_log_gram(cell: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` cells → ``(B, 6)`` ``vech(log(G / n^(2/3)))``."""
    gram = cell @ cell.transpose(-1, -2)
    gram = gram / n_atoms.to(cell.dtype).pow(2.0 / 3.0).view(-1, 1, 1)
    return vech(_sym_fn(gram, torch.log))


def log_gram_to_cell(x: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`cell_to_log_gram` up to a rotation: the symmetric square root of ``G``."""
    root = _sym_fn(unvech(x), lambda e: torch.exp(0.5 * e))
    return root * n_atoms.to(x.dtype).pow(1.0 / 3.0).view(-1, 1, 1)


def gram_from_log(x: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """``G = L Lᵀ`` in Å² from the parameterisation."""
    return _sym_fn(unvech(x), torch.exp) * n_atoms.to(x.dtype).pow(2.0 / 3.0).view(-1, 1, 1)


class LatticeNoise:
    """Variance-preserving diffusion of the standardised log-Gram vector with a cosine schedule.

    ``x_t = sqrt(ᾱ(t)) x_0 + sqrt(1 − ᾱ(t)) ε``; the network predicts ε.
    """

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None, s: float = 0.008):
        self.mean = torch.zeros(6, dtype=torch.float64) if mean is None else torch.as_tensor(mean, dtype=torch.float64)
        self.std = torch.ones(6, dtype=torch.float64) if std is None else torch.as_tensor(std, dtype=torch.float64)
        self.s = s

    def encode(self, cell: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        return (cell_to_log_gram(cell, n_atoms) - self.mean.to(cell)) / self.std.to(cell)

    def decode(self, x: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        return log_gram_to_cell(x * self.std.to(x) + self.mean.to(x), n_atoms)

    def gram(self, x: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        return gram_from_log(x * self.std.to(x) + self.mean.to(x), n_atoms)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        f = torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2
        f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        return (f / f0).clamp(1e-6, 1.0)

    def sample_prior(self, n: int, generator=None, dtype=torch.float64) -> torch.Tensor:
        return torch.randn(n, 6, generator=generator, dtype=dtype)

    def sample_marginal(self, x0: torch.Tensor, t: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        ab = self.alpha_bar(t).view(-1, 1).to(x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, eps

    def reverse_step(
        self, x: torch.Tensor, eps: torch.Tensor, t: float, t_prev: float, generator=None, ode: bool = False
    ) -> torch.Tensor:
        """DDPM ancestral step (or deterministic DDIM step with ``ode=True``) from ``t`` to ``t_prev``."""
        ab_t = float(self.alpha_bar(torch.tensor(t)))
        ab_p = float(self.alpha_bar(torch.tensor(t_prev))) if t_prev > 0 else 1.0
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        x0 = x0.clamp(-6, 6)
        if ode:
            # DDIM moves along the noise that is consistent with the clamped x0; the raw eps would carry an
            # out-of-range prediction on unchanged (deterministic) and blow the lattice up
            eps = (x - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
            return math.sqrt(ab_p) * x0 + math.sqrt(1 - ab_p) * eps
        alpha = ab_t / ab_p
        var = (1 - ab_p) / (1 - ab_t) * (1 - alpha)
        mean = (math.sqrt(ab_p) * (1 - alpha) * x0 + math.sqrt(alpha) * (1 - ab_p) * x) / (1 - ab_t)
        if t_prev <= 0:
            return mean
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return mean + math.sqrt(max(var, 0.0)) * z
