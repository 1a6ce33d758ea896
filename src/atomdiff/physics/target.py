"""A measured powder pattern together with the forward model that explains it: one definition of "agrees".

:class:`PatternTarget` is used for physics guidance during sampling, for Rietveld refinement and for
ranking. The scale factors and the Chebyshev background enter the calculated pattern linearly, so for any
structure(s) they are solved exactly by weighted linear least squares (variable projection) — the misfit is
then a function of the structural and instrument parameters only, and stays differentiable.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from atomdiff.errors import InputError
from atomdiff.physics.agreement import counting_weights, rexp
from atomdiff.physics.diffraction import PowderDiffractionModel
from atomdiff.physics.profile import Instrument, chebyshev_basis
from atomdiff.structure.batch import StructureBatch

BROADENED_CUTOFF = 8.0
"""Peak window (± FWHM) of the broadened evaluations of :meth:`PatternTarget.coarse`."""


@dataclasses.dataclass
class PatternFit:
    """Calculated pattern(s) with their linear parameters.

    Shapes: ``n_fits`` is the number of structures (independent explanations) or 1 (a mixture of phases).

    Attributes:
        y_calc: ``(n_fits, n_points)`` total calculated pattern.
        y_phases: ``(n_structures, n_points)`` scaled contribution of each structure (no background).
        background: ``(n_fits, n_points)``.
        scale: ``(n_structures,)`` scale factor of each structure's unscaled pattern.
        rwp: ``(n_fits,)`` weighted-profile R factor.
        wss: ``(n_fits,)`` weighted sum of squared residuals ``Σ w (yo − yc)²``.
    """

    y_calc: torch.Tensor
    y_phases: torch.Tensor
    background: torch.Tensor
    scale: torch.Tensor
    rwp: torch.Tensor
    wss: torch.Tensor


class PatternTarget:
    """Observed pattern + forward model + weights.

    Args:
        model: a :class:`PowderDiffractionModel` whose grid is the observed grid.
        y_obs: ``(n_points,)`` observed intensities.
        weights: ``1/σ²`` per point (default: counting statistics ``1/max(y_obs, 1)``).
        background_order: number of Chebyshev terms of the background (0 for none).
    """

    def __init__(
        self,
        model: PowderDiffractionModel,
        y_obs: torch.Tensor,
        weights: torch.Tensor | None = None,
        background_order: int = 6,
    ):
        y_obs = torch.as_tensor(y_obs, dtype=torch.float64)
        if y_obs.shape != model.x.shape:
            raise InputError(f"observed pattern has {y_obs.shape[0]} points but the model grid {model.x.shape[0]}")
        if background_order < 0:
            raise InputError(f"background order must be ≥ 0, got {background_order}")
        self.model = model
        self.y_obs = y_obs
        self.weights = counting_weights(y_obs) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.given_weights = weights is not None
        """Whether the weights came with the pattern (uncertainties) rather than from counting statistics."""
        self.background_order = int(background_order)
        self._basis = chebyshev_basis(model.x.to(torch.float64), self.background_order)
        self._coarse: dict[tuple[int, float | None], PatternTarget] = {}

    def expected_rwp(self) -> float | None:
        """Rexp = sqrt(N / Σ w yo²), the Rwp that counting noise alone leaves, when the weights mean something:
        uncertainties given with the pattern, or intensities that are whole counts (then w = 1/yo). ``None`` for
        intensities in arbitrary units without uncertainties."""
        y = self.y_obs
        counts = bool((y >= 0).all()) and float((y - y.round()).abs().max()) < 1e-6 and float(y.max()) >= 10
        if not (self.given_weights or counts):
            return None
        return float(rexp(y, self.weights))

    @property
    def x(self) -> torch.Tensor:
        return self.model.x

    def coarse(
        self, extra_fwhm: float, points_per_fwhm: float = 4.0, cutoff: float | None = BROADENED_CUTOFF
    ) -> PatternTarget:
        """This target for peaks broadened by at least ``extra_fwhm`` (degrees 2θ): on every k-th point of its
        grid, with k the largest step that still samples the narrowest such peak ``points_per_fwhm`` times, and
        with each peak evaluated within ± ``cutoff`` FWHM (``None``: the model's own window). The target itself
        for ``extra_fwhm`` 0, a grid that is not uniform, or k = 1 with the model's window. Broadened misfits
        (the early stages and the volume and axial scans of a refinement, guidance at high noise) only have to
        find the basin of the right lattice: smooth at that scale, they need neither every point nor the far
        Lorentzian tails (0.3 % of a peak's height at 8 FWHM), and their cost is the number of grid points
        under each peak: ~65 per peak within 8 FWHM, 160–320 with the solve's window of 20 FWHM. Sharp
        (unbroadened) evaluations always use the full model."""
        step = self.model.uniform_step
        if step is None or extra_fwhm <= 0:
            return self
        width = float(extra_fwhm)
        if self.model.axis == "q":  # FWHM in Q of a width in 2θ, at its narrowest (the highest angle)
            lam = self.model.wavelength.primary
            theta_max = math.asin(min(1.0, float(self.model.x[-1]) * lam / (4 * math.pi)))
            width = width * (2 * math.pi / lam) * math.cos(theta_max) * math.pi / 180.0
        k = int(width / (points_per_fwhm * step))
        k = max(1, min(k, max(1, (self.model.x.shape[0] - 1) // 50)))  # keep ≥ 50 points
        own = self.model.profile.cutoff
        if cutoff is not None and own is not None and own <= cutoff:
            cutoff = None  # the model's window is already as narrow
        if k == 1 and cutoff is None:
            return self
        if (k, cutoff) not in self._coarse:
            model = self.model.on_grid(self.model.x[::k])
            if cutoff is not None:
                model.profile = dataclasses.replace(model.profile, cutoff=cutoff)
            self._coarse[k, cutoff] = PatternTarget(model, self.y_obs[::k], self.weights[::k], self.background_order)
        return self._coarse[k, cutoff]

    def fit(
        self,
        batch: StructureBatch,
        instrument: Instrument | None = None,
        b_iso: torch.Tensor | None = None,
        mixture: bool = False,
        ridge: float = 1e-10,
    ) -> PatternFit:
        """Best scale(s) and background for the structures of ``batch``.

        With ``mixture=False`` each structure is an alternative explanation of the whole pattern (its own
        scale and background); with ``mixture=True`` the structures are the phases of one sample (one scale
        each, one common background).
        """
        return self.fit_patterns(self.model(batch, b_iso=b_iso, instrument=instrument).y, mixture, ridge)

    def fit_patterns(
        self,
        y_struct: torch.Tensor,
        mixture: bool = False,
        ridge: float = 1e-10,
        active: torch.Tensor | None = None,
    ) -> PatternFit:
        """:meth:`fit` for unscaled calculated patterns ``(B, n)`` already on the grid.

        A mixture's scales are kept non-negative: the phases of ``active`` (boolean, ``(B,)``) are fitted and the
        others get scale 0; by default the set is :meth:`active_phases` of these patterns. Give it explicitly
        where the fit is differentiated along many directions at once (``torch.func`` transforms cannot
        choose it from the values)."""
        dtype = y_struct.dtype
        yo, w = self.y_obs.to(dtype), self.weights.to(dtype)
        basis = self._basis.to(dtype)
        if mixture:
            if active is None:
                active = self.active_phases(y_struct, ridge)
            masked = y_struct * active.to(dtype).unsqueeze(-1)  # a zero column gets coefficient 0
            design = torch.cat([masked, basis], 0).T.unsqueeze(0)  # (1, n, B + K)
        else:
            cols = [y_struct.unsqueeze(-1)]
            if self.background_order:
                cols.append(basis.T.unsqueeze(0).expand(y_struct.shape[0], -1, -1))
            design = torch.cat(cols, -1)  # (B, n, 1 + K)
        coef = _weighted_lstsq(design, yo, w, ridge)
        y_calc = (design @ coef.unsqueeze(-1)).squeeze(-1)
        n_struct = y_struct.shape[0]
        if mixture:
            scale = coef[0, :n_struct]
            background = (coef[:, n_struct:] @ basis) if self.background_order else torch.zeros_like(y_calc)
        else:
            scale = coef[:, 0]
            background = (coef[:, 1:] @ basis) if self.background_order else torch.zeros_like(y_calc)
        resid = yo - y_calc
        wss = (w * resid * resid).sum(-1)
        rwp = torch.sqrt(wss / (w * yo * yo).sum())
        return PatternFit(y_calc, y_struct * scale.unsqueeze(-1), background, scale, rwp, wss)

    def active_phases(self, y_struct: torch.Tensor, ridge: float = 1e-10) -> torch.Tensor:
        """Which phases of a mixture get a positive scale: the most negative scale of a free fit is set to 0 and
        the rest fitted again until none is negative (a negative scale is not a physical amount of a phase; left
        free, a phase whose lines lie next to another's takes a negative scale to reshape that phase's peaks
        while the profile is still wrong, and its lattice is then refined to fit that)."""
        y = y_struct.detach()
        yo, w, basis = self.y_obs.to(y.dtype), self.weights.to(y.dtype), self._basis.to(y.dtype)
        active = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        while True:
            design = torch.cat([y * active.to(y.dtype).unsqueeze(-1), basis], 0).T.unsqueeze(0)
            scale = _weighted_lstsq(design, yo, w, ridge)[0, : y.shape[0]]
            negative = active & (scale < 0)
            if not bool(negative.any()) or int(active.sum()) == 1:
                return active
            active = active & (torch.arange(y.shape[0], device=y.device) != int(torch.argmin(scale)))


def _weighted_lstsq(design: torch.Tensor, y: torch.Tensor, w: torch.Tensor, ridge: float) -> torch.Tensor:
    """``argmin_c Σ w (y − A c)²`` for each of a batch of designs ``(B, n, p)``; columns are normalised first
    (with a tiny ridge) so that an all-zero column (a structure with no reflection in range) gives 0."""
    norms = torch.sqrt((w.unsqueeze(-1) * design * design).sum(-2)).clamp_min(1e-30)  # (B, p)
    a = design / norms.unsqueeze(-2)
    aw = a * w.unsqueeze(-1)
    lhs = aw.transpose(-1, -2) @ a + ridge * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    rhs = aw.transpose(-1, -2) @ y.unsqueeze(-1)
    return torch.linalg.solve(lhs, rhs).squeeze(-1) / norms
