"""Peak shapes and instrument parameters of powder patterns.

:class:`Profile` holds fixed floats for simulation; :class:`Instrument` holds the same quantities as tensors,
one value per structure of a batch, so that refinement and guidance can differentiate through them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.physics.base import value_of

_MAX_ELEMENTS_PER_CHUNK = 40_000_000
_LN2 = math.log(2.0)


@dataclasses.dataclass(frozen=True)
class Profile:
    """Pseudo-Voigt peak shape: Caglioti U, V, W in degrees² (2θ) and Lorentzian fraction ``eta``.

    On a uniform grid each peak is evaluated within ± ``cutoff`` FWHM of its centre (as Rietveld programs
    do); the Lorentzian area beyond ±40 FWHM is 0.8 % of it. ``cutoff=None`` evaluates every point.
    """

    u: float = 0.0
    v: float = 0.0
    w: float = 0.01
    eta: float = 0.5
    cutoff: float | None = 40.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise InputError(f"profile eta (Lorentzian fraction) must be within [0, 1], got {self.eta}")
        if all(self.u * t * t + self.v * t + self.w <= 0 for t in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)):
            raise InputError("profile: Caglioti U, V, W give no positive peak width")

    def fwhm(self, theta: torch.Tensor) -> torch.Tensor:
        """Full width at half maximum in degrees 2θ at Bragg angle ``theta`` (radians)."""
        t = torch.tan(theta)
        h2 = self.u * t * t + self.v * t + self.w
        return torch.sqrt(h2.clamp_min(1e-10))


@dataclasses.dataclass
class Instrument:
    """Per-structure instrument and sample parameters as tensors of shape ``(n_structures,)``.

    Attributes:
        zero_shift: added to every peak position, degrees 2θ.
        u, v, w: Caglioti coefficients, degrees².
        eta: Lorentzian fraction of the pseudo-Voigt.
        extra_fwhm: Gaussian broadening added in quadrature to every peak, degrees 2θ (used to smooth the
            misfit landscape at the start of a refinement and at high noise during guided sampling).
        po_ratio: March–Dollase ratio ``r`` (1 = no texture; < 1 platelets, > 1 needles along the direction).
        po_direction: ``(n_structures, 3)`` preferred-orientation direction as reciprocal-lattice indices hkl.
    """

    zero_shift: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    w: torch.Tensor
    eta: torch.Tensor
    extra_fwhm: torch.Tensor | None = None
    po_ratio: torch.Tensor | None = None
    po_direction: torch.Tensor | None = None

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        n: int,
        zero_shift: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Instrument:
        def full(value: float) -> torch.Tensor:
            return torch.full((n,), float(value), dtype=dtype, device=device)

        return cls(full(zero_shift), full(profile.u), full(profile.v), full(profile.w), full(profile.eta))

    def fwhm(self, theta: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        """FWHM (degrees 2θ) of peaks at Bragg angles ``theta`` (radians, ``(m, L)``) of structures ``owner``."""
        t = torch.tan(theta)
        u, v, w = (p[owner].unsqueeze(-1) for p in (self.u, self.v, self.w))
        h2 = u * t * t + v * t + w
        if self.extra_fwhm is not None:
            h2 = h2 + self.extra_fwhm[owner].unsqueeze(-1) ** 2
        return torch.sqrt(h2.clamp_min(1e-8))

    def texture(self, g_cart: torch.Tensor, recip: torch.Tensor, owner: torch.Tensor) -> torch.Tensor | None:
        """March–Dollase factor ``(r² cos²α + sin²α / r)^(−3/2)`` of each reflection (``None`` without texture).

        ``g_cart`` are the reflections' scattering vectors ``(m, 3)`` and ``recip`` the reciprocal cells
        ``(n_structures, 3, 3)``; α is the angle between g and the preferred direction.
        """
        if self.po_ratio is None or self.po_direction is None:
            return None
        direction = torch.einsum("bk,bkj->bj", self.po_direction.to(recip), recip)[owner]
        cos_a = (g_cart * direction).sum(-1) / (g_cart.norm(dim=-1) * direction.norm(dim=-1)).clamp_min(1e-12)
        cos2 = (cos_a * cos_a).clamp(0.0, 1.0)
        r = self.po_ratio[owner].clamp_min(1e-3)
        return (r * r * cos2 + (1 - cos2) / r).pow(-1.5)


def pseudo_voigt(dx: torch.Tensor, h: torch.Tensor, eta: torch.Tensor | float) -> torch.Tensor:
    """Area-normalised pseudo-Voigt at offsets ``dx`` for FWHM ``h`` (same unit)."""
    z2 = (dx / h) ** 2
    gauss = (2.0 / h) * math.sqrt(_LN2 / math.pi) * torch.exp(-4 * _LN2 * z2)
    lorentz = (2.0 / (math.pi * h)) / (1.0 + 4.0 * z2)
    return eta * lorentz + (1.0 - eta) * gauss


def merge_coincident(
    centre: torch.Tensor, fwhm: torch.Tensor, area: torch.Tensor, owner: torch.Tensor, eta: torch.Tensor, tol: float
) -> tuple[torch.Tensor, ...]:
    """Merge peaks of one structure whose centres agree within ``tol`` into one peak of the summed area.

    The merged centre and width are area-weighted means, so the pattern and its first derivatives with
    respect to every parameter are unchanged where the members coincide exactly (symmetry-equivalent
    reflections): ``Σ A_i pV(x − c_i)`` has derivative ``−pV′ Σ A_i dc_i = −A pV′ dc̄``. High-symmetry cells
    have dozens of equivalent reflections per peak, so this is a large saving.
    """
    if centre.numel() == 0:
        return centre, fwhm, area, owner, eta
    pos = torch.as_tensor(np.round(value_of(centre) / tol), device=centre.device).long()
    pos = pos - pos.min()
    key = owner * (int(pos.max()) + 1) + pos
    uniq, inverse = torch.unique(key, return_inverse=True)
    m = uniq.shape[0]
    if m == centre.shape[0]:
        return centre, fwhm, area, owner, eta
    new_owner = torch.zeros(m, dtype=owner.dtype, device=owner.device).scatter_(0, inverse, owner)

    def total(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(m, dtype=values.dtype, device=values.device).index_add(0, inverse, values)

    a = total(area)
    safe = torch.where(a != 0, a, torch.ones_like(a))
    c = total(area * centre) / safe
    h = total(area * fwhm) / safe
    e = total(area * eta) / safe
    return c, h, a, new_owner, e


@dataclasses.dataclass
class PeakList:
    """The peaks of a batch of patterns as flat rows: centre, FWHM, area (units of the x axis), owner
    (structure index) and Lorentzian fraction; zero-area peaks removed and, on a uniform grid, coincident
    peaks merged (:func:`merge_coincident`)."""

    centre: torch.Tensor
    fwhm: torch.Tensor
    area: torch.Tensor
    owner: torch.Tensor
    eta: torch.Tensor
    n_structures: int

    @classmethod
    def build(
        cls,
        centre: torch.Tensor,
        fwhm: torch.Tensor,
        area: torch.Tensor,
        batch_idx: torch.Tensor,
        eta: torch.Tensor,
        n_structures: int,
        step: float | None,
    ) -> PeakList:
        """From peak inputs ``(M, L)`` (``L`` wavelength components) owned by ``batch_idx`` ``(M,)`` and
        ``eta`` per structure ``(n_structures,)``."""
        owner = batch_idx.unsqueeze(-1).expand_as(centre)
        centre, fwhm, area, owner = centre.reshape(-1), fwhm.reshape(-1), area.reshape(-1), owner.reshape(-1)
        keep = torch.as_tensor(value_of(area) != 0, device=area.device)
        centre, fwhm, area, owner = centre[keep], fwhm[keep], area[keep], owner[keep]
        peak_eta = eta[owner]
        if step is not None:
            centre, fwhm, area, owner, peak_eta = merge_coincident(centre, fwhm, area, owner, peak_eta, 1e-3 * step)
        return cls(centre, fwhm, area, owner, peak_eta, n_structures)


def _windows(x: torch.Tensor, peaks: PeakList, cutoff: float | None, step: float | None, budget: int):
    """Chunks of peaks with the grid points each one covers: ``(rows, idx (m, w), valid (m, w), dx (m, w))``
    with ``m·w`` ≤ ``budget``. On a uniform grid only the points within ± ``cutoff`` FWHM of a peak; else all."""
    n = x.shape[0]
    centre, fwhm = peaks.centre, peaks.fwhm
    if step is None or cutoff is None or not centre.numel():
        chunk = max(1, budget // n)
        idx = torch.arange(n, device=x.device)
        for start in range(0, centre.shape[0], chunk):
            rows = torch.arange(start, min(start + chunk, centre.shape[0]), device=x.device)
            dx = x.unsqueeze(0) - centre[rows].unsqueeze(-1)
            yield rows, idx.expand(rows.shape[0], n), None, dx
        return
    # peaks are grouped by width (windows of 2^k points), so a few broad peaks do not widen every window
    half_need = torch.ceil(cutoff * fwhm.detach() / step).clamp(1, n)
    bucket = torch.ceil(torch.log2(half_need)).long()
    for b in torch.unique(bucket).tolist():
        sel = torch.nonzero(bucket == b).squeeze(-1)
        half = int(half_need[sel].max())  # the widest peak of the group, not the group's power of two
        offsets = torch.arange(-half, half + 1, device=x.device)
        chunk = max(1, budget // offsets.shape[0])
        for start in range(0, sel.shape[0], chunk):
            rows = sel[start : start + chunk]
            c = centre[rows]
            nearest = torch.round((c.detach() - x[0]) / step).long()
            idx = nearest.unsqueeze(-1) + offsets  # (m, w)
            valid = (idx >= 0) & (idx < n)
            dx = x[0] + idx.to(x.dtype) * step - c.unsqueeze(-1)
            valid = valid & (dx.detach().abs() <= cutoff * fwhm[rows].detach().unsqueeze(-1))
            yield rows, idx.clamp(0, n - 1), valid, dx


def profile_sum(x: torch.Tensor, peaks: PeakList, cutoff: float | None, step: float | None) -> torch.Tensor:
    """Σ_peaks area · pV(x − centre) per structure, ``(n_structures, n)``."""
    n = x.shape[0]
    out = torch.zeros(peaks.n_structures * n, dtype=x.dtype, device=x.device)
    for rows, idx, valid, dx in _windows(x, peaks, cutoff, step, _MAX_ELEMENTS_PER_CHUNK):
        shape = pseudo_voigt(dx, peaks.fwhm[rows].unsqueeze(-1), peaks.eta[rows].unsqueeze(-1))
        shape = shape * peaks.area[rows].unsqueeze(-1)
        if valid is not None:  # masking by multiplication: gathering the valid entries costs more than adding 0s
            shape = shape * valid
        flat = peaks.owner[rows].unsqueeze(-1) * n + idx
        out = out.index_add(0, flat.reshape(-1), shape.reshape(-1))
    return out.view(peaks.n_structures, n)


def profile_sum_jvp(
    x: torch.Tensor,
    peaks: PeakList,
    tangents: dict[str, torch.Tensor],
    cutoff: float | None,
    step: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`profile_sum` and its derivatives along ``K`` directions at once: ``tangents`` holds the
    derivative of each peak's ``centre``, ``fwhm``, ``area`` and ``eta`` along each direction, ``(M, K)``.
    Returns ``(y (n_structures, n), dy (n_structures, n, K))``.

    The same as K forward-mode passes through :func:`profile_sum`, but the peak shapes and their analytic
    partial derivatives are evaluated once and combined with the K tangents by one batched product per chunk
    (Rietveld refinement spends most of its time here: a K-column Jacobian costs about what 3 evaluations do).
    """
    n, k = x.shape[0], tangents["centre"].shape[-1]
    out = torch.zeros(peaks.n_structures * n, dtype=x.dtype, device=x.device)
    dout = torch.zeros(peaks.n_structures * n, k, dtype=x.dtype, device=x.device)
    budget = max(1, _MAX_ELEMENTS_PER_CHUNK // (4 * max(k, 4)))
    four_ln2 = 4 * _LN2
    for rows, idx, valid, dx in _windows(x, peaks, cutoff, step, budget):
        h = peaks.fwhm[rows].unsqueeze(-1)
        eta = peaks.eta[rows].unsqueeze(-1)
        area = peaks.area[rows].unsqueeze(-1)
        z = dx / h
        z2 = z * z
        gauss = (2.0 / h) * math.sqrt(_LN2 / math.pi) * torch.exp(-four_ln2 * z2)
        inv = 1.0 / (1.0 + 4.0 * z2)
        lorentz = (2.0 / (math.pi * h)) * inv
        shape = eta * lorentz + (1.0 - eta) * gauss
        # partial derivatives of the area-normalised pseudo-Voigt (dx = x − centre, z = dx / h)
        d_centre = (eta * lorentz * 8.0 * z * inv + (1.0 - eta) * gauss * 2 * four_ln2 * z) / h
        d_fwhm = (eta * lorentz * (8.0 * z2 * inv - 1.0) + (1.0 - eta) * gauss * (2 * four_ln2 * z2 - 1.0)) / h
        d_eta = lorentz - gauss
        basis = torch.stack([shape, area * d_centre, area * d_fwhm, area * d_eta], -1)  # (m, w, 4)
        if valid is not None:
            basis = basis * valid.unsqueeze(-1)
        coef = torch.stack(
            [tangents["area"][rows], tangents["centre"][rows], tangents["fwhm"][rows], tangents["eta"][rows]], 1
        )  # (m, 4, K)
        flat = (peaks.owner[rows].unsqueeze(-1) * n + idx).reshape(-1)
        out = out.index_add(0, flat, (basis[..., 0] * area).reshape(-1))
        dout = dout.index_add(0, flat, torch.bmm(basis, coef).reshape(-1, k))
    return out.view(peaks.n_structures, n), dout.view(peaks.n_structures, n, k)


def chebyshev_background(x: torch.Tensor, coefficients: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``Σ c_k T_k(x')`` with x mapped linearly onto [−1, 1]; shape ``(n_points,)`` (or ``(B, n_points)`` for
    coefficients of shape ``(B, K)``)."""
    c = torch.as_tensor(coefficients, dtype=x.dtype, device=x.device)
    basis = chebyshev_basis(x, c.shape[-1])
    return c @ basis if c.numel() else torch.zeros(*c.shape[:-1], x.shape[0], dtype=x.dtype, device=x.device)


def chebyshev_basis(x: torch.Tensor, order: int) -> torch.Tensor:
    """``(order, n_points)`` Chebyshev polynomials T_0 … T_{order−1} of x mapped onto [−1, 1]."""
    t = 2 * (x - x[0]) / (x[-1] - x[0]) - 1 if x.shape[0] > 1 else torch.zeros_like(x)
    rows = []
    prev, cur = torch.ones_like(t), t
    for k in range(order):
        if k == 0:
            rows.append(prev)
        else:
            rows.append(cur)
            prev, cur = cur, 2 * t * cur - prev
    return torch.stack(rows) if rows else x.new_zeros(0, x.shape[0])
