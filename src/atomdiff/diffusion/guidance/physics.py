"""Physics guidance: steer sampling by the misfit between a measured pattern and the pattern simulated for
the current denoised estimate of the clean structure (posterior sampling in the style of DPS).

At each step the sampler forms the denoised estimates (Tweedie): ``frac₀ = frac_t + σ² s_frac`` for the
wrapped coordinates and ``x₀ = (x_t − sqrt(1−ᾱ) ε)/sqrt(ᾱ)`` for the lattice, simulates their pattern,
fits scale and background exactly (:class:`~atomdiff.physics.target.PatternTarget`) and takes the gradient
of Rwp with respect to both estimates. The Jacobian of the denoiser is approximated by its leading term (the
identity for coordinates, ``1/sqrt(ᾱ)`` for the lattice), which avoids back-propagating through the network.
The gradients are normalised per structure and added to the scores with weight ``strength`` relative to
the score's own size, so one strength works across noise levels and datasets. At high noise the simulated
peaks are broadened (``extra_fwhm`` shrinks linearly with t), which makes the misfit smooth where the
estimate is still coarse; the broadened misfit is evaluated on the measured grid thinned to 4 points per
extra FWHM (:meth:`~atomdiff.physics.target.PatternTarget.coarse`).
"""

from __future__ import annotations

import torch

from atomdiff.diffusion.guidance.determinism import deterministic
from atomdiff.physics.profile import Instrument
from atomdiff.physics.target import PatternTarget
from atomdiff.structure.batch import StructureBatch


class PhysicsGuidance:
    """Gradient of a pattern misfit at the denoised estimate.

    Args:
        target: measured pattern and its forward model (its profile and zero shift are used as they are).
        strength: weight of the normalised misfit gradient relative to the score (0 switches guidance off).
        t_start: guidance acts only for ``t ≤ t_start`` (t runs from 1, noise, to 0, data).
        extra_fwhm: ``(at t = 1, at t = 0)`` extra Gaussian peak width in degrees 2θ.
    """

    def __init__(
        self,
        target: PatternTarget,
        strength: float = 0.5,
        t_start: float = 0.8,
        extra_fwhm: tuple[float, float] = (0.8, 0.05),
    ):
        self.target = target
        self.strength = float(strength)
        self.t_start = float(t_start)
        self.extra_fwhm = extra_fwhm

    def active(self, t: float) -> bool:
        return self.strength > 0 and t <= self.t_start

    def misfit(self, batch: StructureBatch, t: float) -> torch.Tensor:
        """Rwp of each structure against the target, with peaks broadened for noise level ``t``; ``(n,)``."""
        hi, lo = self.extra_fwhm
        model = self.target.model
        inst = model.instrument(len(batch), batch.frac.dtype, batch.frac.device)
        inst = Instrument(inst.zero_shift, inst.u, inst.v, inst.w, inst.eta, None, inst.po_ratio, inst.po_direction)
        extra = lo + (hi - lo) * float(t)
        inst.extra_fwhm = torch.full((len(batch),), extra, dtype=batch.frac.dtype)
        # on the grid coarsened to the broadening (the misfit is smooth at that scale; the cost ∝ points), with
        # the model's own peak window: the kesterite solve's first pass was measured with it
        return self.target.coarse(extra, cutoff=None).fit(batch, inst).rwp

    def gradients(self, batch: StructureBatch, x0: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised descent directions ``(d_frac (n_atoms, 3), d_x (n, 6))`` of the misfit; ``batch.frac``
        and ``x0`` must require gradients and ``batch.cell`` be computed from ``x0``."""
        with deterministic():  # the same seed must give the same structures on any number of threads
            loss = self.misfit(batch, t)
            finite = torch.isfinite(loss)
            g_frac, g_x = torch.autograd.grad(torch.where(finite, loss, torch.zeros_like(loss)).sum(), (batch.frac, x0))
        g_frac = torch.nan_to_num(g_frac)
        g_x = torch.nan_to_num(g_x)
        rms_x = torch.sqrt((g_x * g_x).mean(-1, keepdim=True)).clamp_min(1e-30)
        return normalised_per_structure(g_frac, batch.batch_idx, len(batch)), g_x / rms_x


def normalised_per_structure(g_frac: torch.Tensor, batch_idx: torch.Tensor, n: int) -> torch.Tensor:
    """``g_frac`` divided by its RMS over each structure's coordinates (a zero structure stays zero): the
    direction from the data, the size from the score."""
    sq = torch.zeros(n, dtype=g_frac.dtype).index_add(0, batch_idx, (g_frac * g_frac).sum(-1))
    count = torch.bincount(batch_idx, minlength=n).clamp_min(1) * 3
    rms = torch.sqrt(sq / count).clamp_min(1e-30)[batch_idx].unsqueeze(-1)
    return g_frac / rms
