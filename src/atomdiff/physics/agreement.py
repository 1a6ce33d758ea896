"""Agreement between an observed and a calculated pattern (Rietveld conventions, torch, differentiable).

All functions take tensors of shape ``(..., n_points)`` and reduce over the last axis. ``weights`` default to
``1 / y_obs`` (counting statistics), clamped where ``y_obs`` is not positive.
"""

from __future__ import annotations

import torch


def counting_weights(y_obs: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """``1/σ²``; with no σ, Poisson statistics ``σ² = y_obs`` (at least 1 count)."""
    if sigma is not None:
        return 1.0 / sigma.clamp_min(torch.finfo(sigma.dtype).tiny).pow(2)
    return 1.0 / y_obs.clamp_min(1.0)


def rwp(y_obs: torch.Tensor, y_calc: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted-profile R factor ``sqrt(Σ w (yo − yc)² / Σ w yo²)``."""
    w = counting_weights(y_obs) if weights is None else weights
    return torch.sqrt((w * (y_obs - y_calc) ** 2).sum(-1) / (w * y_obs**2).sum(-1))


def rp(y_obs: torch.Tensor, y_calc: torch.Tensor) -> torch.Tensor:
    """Profile R factor ``Σ |yo − yc| / Σ |yo|``."""
    return (y_obs - y_calc).abs().sum(-1) / y_obs.abs().sum(-1)


def chi2(
    y_obs: torch.Tensor, y_calc: torch.Tensor, weights: torch.Tensor | None = None, n_params: int = 0
) -> torch.Tensor:
    """Reduced χ² ``Σ w (yo − yc)² / (N − P)``."""
    w = counting_weights(y_obs) if weights is None else weights
    dof = max(y_obs.shape[-1] - n_params, 1)
    return (w * (y_obs - y_calc) ** 2).sum(-1) / dof


def rexp(y_obs: torch.Tensor, weights: torch.Tensor | None = None, n_params: int = 0) -> torch.Tensor:
    """Expected R factor ``sqrt((N − P) / Σ w yo²)``; ``Rwp/Rexp`` is the goodness of fit."""
    w = counting_weights(y_obs) if weights is None else weights
    dof = max(y_obs.shape[-1] - n_params, 1)
    return torch.sqrt(dof / (w * y_obs**2).sum(-1))


def cosine_similarity(y_obs: torch.Tensor, y_calc: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between the two patterns seen as vectors (1 = same shape)."""
    num = (y_obs * y_calc).sum(-1)
    den = torch.linalg.norm(y_obs, dim=-1) * torch.linalg.norm(y_calc, dim=-1)
    return num / den.clamp_min(torch.finfo(y_obs.dtype).tiny)


def optimal_scale(y_obs: torch.Tensor, y_calc: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares scale ``s`` minimising ``Σ w (yo − s·yc)²``, shape ``(...,)``."""
    w = counting_weights(y_obs) if weights is None else weights
    return (w * y_obs * y_calc).sum(-1) / (w * y_calc**2).sum(-1).clamp_min(torch.finfo(y_obs.dtype).tiny)
