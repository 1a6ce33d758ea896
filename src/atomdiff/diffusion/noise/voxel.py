"""Variance-preserving Gaussian diffusion of voxel fields (cosine schedule), with DDPM and DDIM reverse steps.

A field ``f`` (an isolated atom is a peak of height 1 on a background of 0, see
:mod:`atomdiff.representations.voxel`) is standardised to ``x = (f − shift) / scale`` (by default
``x = 2f − 1``: background −1, atoms +1) and noised as ``x_t = sqrt(ᾱ(t)) x_0 + sqrt(1 − ᾱ(t)) ε``. The
network predicts ``ε`` (``prediction="eps"``) or ``v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x_0`` (``"v"``). In the
reverse steps the denoised estimate is clipped to the range a field can take (``field_range``), which is
where the constraint "densities are not negative" enters sampling.
"""

from __future__ import annotations

import math

import torch

from atomdiff.errors import InputError

PREDICTIONS = ("eps", "v")


class VoxelNoise:
    """``x_t = sqrt(ᾱ(t)) x_0 + sqrt(1 − ᾱ(t)) ε`` on standardised fields, ``ᾱ`` the cosine schedule."""

    def __init__(
        self,
        prediction: str = "eps",
        shift: float = 0.5,
        scale: float = 0.5,
        field_range: tuple[float, float] = (0.0, 2.0),
        s: float = 0.008,
    ):
        if prediction not in PREDICTIONS:
            raise InputError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if not scale > 0:
            raise InputError(f"scale must be positive, got {scale}")
        if not field_range[0] < field_range[1]:
            raise InputError(f"field_range must be (low, high) with low < high, got {field_range}")
        self.prediction = prediction
        self.shift = float(shift)
        self.scale = float(scale)
        self.field_range = (float(field_range[0]), float(field_range[1]))
        self.s = float(s)

    # --- standardisation ----------------------------------------------------------------------------
    def encode(self, field: torch.Tensor) -> torch.Tensor:
        return (field - self.shift) / self.scale

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    @property
    def x_range(self) -> tuple[float, float]:
        """``field_range`` in standardised units."""
        return (self.field_range[0] - self.shift) / self.scale, (self.field_range[1] - self.shift) / self.scale

    # --- forward process ----------------------------------------------------------------------------
    def alpha_bar(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        f = torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2
        f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        return (f / f0).clamp(1e-6, 1.0)

    def sample_prior(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype)

    def sample_marginal(
        self, x0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, ε)`` for standardised fields ``x0`` ``(B, ...)`` at times ``t`` ``(B,)``; the noise is drawn
        on the CPU (so a CPU generator reproduces it on any device) and moved to ``x0``'s device."""
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        ab = self._expand(self.alpha_bar(t), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, eps

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output at ``x_t`` (``ε`` or ``v``)."""
        if self.prediction == "eps":
            return eps
        ab = self._expand(self.alpha_bar(t), x0)
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    def loss(
        self,
        output: torch.Tensor,
        x0: torch.Tensor,
        eps: torch.Tensor,
        t: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error of the network output against :meth:`target`, optionally weighted per voxel
        (``weight`` broadcast against the output; the mean is taken over ``weight * error``)."""
        error = (output - self.target(x0, eps, t).to(output)) ** 2
        return (error if weight is None else weight * error).mean()

    # --- reverse process ----------------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, output: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x̂_0, ε̂)`` from the network output at ``x_t``, with ``x̂_0`` clipped to :attr:`x_range` and ``ε̂``
        made consistent with the clipped estimate."""
        ab = float(self.alpha_bar(t))
        if self.prediction == "eps":
            x0 = (x - math.sqrt(1 - ab) * output) / math.sqrt(ab)
        else:
            x0 = math.sqrt(ab) * x - math.sqrt(1 - ab) * output
        x0 = x0.clamp(*self.x_range)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        return x0, eps

    def reverse_step(
        self,
        x: torch.Tensor,
        output: torch.Tensor,
        t: float,
        t_prev: float,
        generator: torch.Generator | None = None,
        eta: float = 1.0,
    ) -> torch.Tensor:
        """One step from ``t`` to ``t_prev < t``: ``eta=1`` is DDPM's ancestral step (the posterior
        ``q(x_prev | x_t, x̂_0)``), ``eta=0`` the deterministic DDIM step. At ``t_prev = 0`` it returns ``x̂_0``."""
        x0, eps = self.denoise(x, output, t)
        if t_prev <= 0:
            return x0
        ab_t = float(self.alpha_bar(t))
        ab_p = float(self.alpha_bar(t_prev))
        var = eta**2 * (1 - ab_p) / (1 - ab_t) * max(1 - ab_t / ab_p, 0.0)
        out = math.sqrt(ab_p) * x0 + math.sqrt(max(1 - ab_p - var, 0.0)) * eps
        if var > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            out = out + math.sqrt(var) * z
        return out

    @staticmethod
    def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like).reshape(-1, *([1] * (like.dim() - 1)))
