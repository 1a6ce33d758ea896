"""Powder diffraction (X-ray and constant-wavelength neutron), batched and differentiable.

For each structure the reflections ``hkl`` inside the measured range are enumerated (one of each Friedel
pair, counted twice), and for each

    I(hkl) = 2 |F(hkl)|² · LP(θ),     F(hkl) = Σ_j f_j(s) exp(−B_j s²) exp(2πi h·x_j),     s = sinθ/λ = 1/(2d)

with f_j the X-ray form factor or the neutron coherent scattering length b_j, B_j the isotropic
displacement parameter (Å², ``B = 8π² U_iso``) and the Lorentz–polarisation factor
``LP = (1 + K cos² 2θ) / (sin² θ cos θ)`` for X-rays (``K = 1`` unpolarised, ``K = 0`` for a beam polarised
perpendicular to the scattering plane, as at most synchrotron powder lines), ``1/(sin² θ cos θ)`` for
neutrons. Symmetry-equivalent and accidentally overlapping reflections are not merged for the pattern
(each is drawn with its own profile, which is equivalent); :func:`peak_table` merges those at the same 2θ.

The profile is a pseudo-Voigt with Caglioti width ``FWHM² = U tan²θ + V tanθ + W`` (degrees²) and a
Lorentzian fraction ``eta``; the observed position is ``2θ + zero_shift``; an optional Chebyshev background
is added. A Q axis (``Q = 4π sinθ/λ``, Å⁻¹) uses the primary wavelength to convert the measured angle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.physics.base import ForwardModel, Pattern, value_of
from atomdiff.physics.profile import Instrument, PeakList, Profile, chebyshev_background, profile_sum
from atomdiff.physics.radiation import Wavelength, parse_wavelength
from atomdiff.physics.reflections import enumerate_hkl
from atomdiff.physics.scattering import neutron_scattering_length, xray_form_factor
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.structure import Structure


@dataclasses.dataclass
class Reflections:
    """Reflections of all structures of a batch, concatenated (structure by structure).

    Attributes:
        hkl: ``(n_refl, 3)`` Miller indices (one of each ±hkl pair).
        batch_idx: ``(n_refl,)`` structure of each reflection.
        d: ``(n_refl,)`` d-spacing, Å.
        two_theta: ``(n_refl, n_wavelengths)`` Bragg angle 2θ in degrees (no zero shift).
        intensity: ``(n_refl, n_wavelengths)`` ``2 |F|² LP × weight``; zero outside the range.
        structure_factor_sq: ``(n_refl,)`` ``|F|²``.
    """

    hkl: torch.Tensor
    batch_idx: torch.Tensor
    d: torch.Tensor
    two_theta: torch.Tensor
    intensity: torch.Tensor
    structure_factor_sq: torch.Tensor


class PowderDiffractionModel(ForwardModel):
    """Powder pattern of each structure in a batch on a common 2θ (degrees) or Q (Å⁻¹) grid.

    Args:
        radiation: ``"xray"`` or ``"neutron"``.
        wavelength: a name (``"CuKa1"``, ``"CuKa"`` for the Kα1+Kα2 doublet, ``"MoKa1"``), a value in Å,
            or a :class:`Wavelength`.
        x: the output grid (2θ in degrees or Q in Å⁻¹, strictly increasing).
        axis: ``"two_theta"`` or ``"q"``.
        profile: peak shape.
        zero_shift: instrument zero error, degrees 2θ (added to every peak position).
        background: Chebyshev coefficients over the grid mapped onto [−1, 1].
        polarization: K in the Lorentz–polarisation factor (X-rays only).
        b_iso: default isotropic displacement parameter B, Å², for every atom (per-atom values can be
            passed to :meth:`forward`).
        form_factors: ``"xraydb"`` (Waasmaier–Kirfel, default) or ``"pymatgen"``.
        neutron_lengths: element symbol → coherent scattering length (fm), overriding the table.
        po_ratio, po_direction: March–Dollase preferred orientation (ratio r, reciprocal-lattice direction hkl);
            ``po_ratio=1`` (default) is a random powder.
    """

    def __init__(
        self,
        radiation: str = "xray",
        wavelength: str | float | Wavelength = "CuKa1",
        x: torch.Tensor | Sequence[float] | None = None,
        axis: str = "two_theta",
        profile: Profile | None = None,
        zero_shift: float = 0.0,
        background: Sequence[float] | None = None,
        polarization: float = 1.0,
        b_iso: float = 0.0,
        form_factors: str = "xraydb",
        neutron_lengths: dict[str, float] | None = None,
        po_ratio: float = 1.0,
        po_direction: Sequence[float] = (0.0, 0.0, 1.0),
    ):
        super().__init__()
        if not po_ratio > 0:
            raise InputError(f"preferred-orientation ratio must be positive, got {po_ratio}")
        if not any(float(v) != 0 for v in po_direction) or len(po_direction) != 3:
            raise InputError(f"preferred-orientation direction must be three indices, not all 0: {po_direction}")
        self.po_ratio = float(po_ratio)
        self.po_direction = tuple(float(v) for v in po_direction)
        if radiation not in ("xray", "neutron"):
            raise InputError(f"radiation must be 'xray' or 'neutron', got {radiation!r}")
        if axis not in ("two_theta", "q"):
            raise InputError(f"axis must be 'two_theta' or 'q', got {axis!r}")
        self.radiation = radiation
        self.wavelength = parse_wavelength(wavelength)
        self.axis = axis
        self.profile = profile or Profile()
        self.zero_shift = float(zero_shift)
        self.background = None if background is None else [float(c) for c in background]
        self.polarization = float(polarization)
        self.b_iso = float(b_iso)
        self.form_factors = form_factors
        self.neutron_lengths = neutron_lengths
        if x is None:
            x = torch.arange(10.0, 90.0 + 1e-9, 0.02, dtype=torch.float64) if axis == "two_theta" else None
            if x is None:
                raise InputError("a Q grid must be given for axis='q'")
        x = torch.as_tensor(x, dtype=torch.float64)
        check_grid(x, axis, self.wavelength)
        self.register_buffer("x", x, persistent=False)
        steps = x[1:] - x[:-1]
        #: grid step when the grid is uniform (peaks are then evaluated only near their centres)
        self.uniform_step = (
            float(steps.mean()) if bool(torch.allclose(steps, steps.mean(), rtol=1e-6, atol=0)) else None
        )

    def on_grid(self, x: torch.Tensor) -> PowderDiffractionModel:
        """The same model (radiation, profile, corrections) on another grid."""
        import copy

        x = torch.as_tensor(x, dtype=torch.float64)
        check_grid(x, self.axis, self.wavelength)
        other = copy.copy(self)
        other._buffers = dict(self._buffers)  # a shallow copy would share (and overwrite) the grid buffer
        other.x = x
        steps = x[1:] - x[:-1]
        other.uniform_step = (
            float(steps.mean()) if bool(torch.allclose(steps, steps.mean(), rtol=1e-6, atol=0)) else None
        )
        return other

    # --- reflections --------------------------------------------------------------------------------
    def instrument(self, n: int, dtype=torch.float64, device=None) -> Instrument:
        """The model's own profile, zero shift and texture as an :class:`Instrument` for ``n`` structures."""
        inst = Instrument.from_profile(self.profile, n, self.zero_shift, dtype, device)
        if self.po_ratio != 1.0:
            inst.po_ratio = torch.full((n,), self.po_ratio, dtype=dtype, device=device)
            inst.po_direction = torch.tensor(self.po_direction, dtype=dtype, device=device).expand(n, 3)
        return inst

    def two_theta_limits(self, margin: float = 0.0, instrument: Instrument | None = None) -> tuple[float, float]:
        """The 2θ range (degrees) that the grid covers, widened by ``margin`` and clipped to (0, 180)."""
        lo, hi = float(self.x[0]), float(self.x[-1])
        if self.axis == "q":
            lam = self.wavelength.primary
            lo, hi = (2 * math.degrees(math.asin(min(1.0, q * lam / (4 * math.pi)))) for q in (lo, hi))
        if instrument is None:
            zero_lo = zero_hi = self.zero_shift
        else:
            zero = value_of(instrument.zero_shift)
            zero_lo, zero_hi = float(zero.max()), float(zero.min())
        lo, hi = lo - zero_lo - margin, hi - zero_hi + margin
        return max(lo, 1e-6), min(hi, 180.0 - 1e-9)

    def reflections(
        self,
        batch: StructureBatch,
        b_iso: torch.Tensor | None = None,
        occupancy: torch.Tensor | None = None,
        margin: float = 0.0,
        instrument: Instrument | None = None,
    ) -> Reflections:
        """Reflections whose 2θ lies in the grid's range (± ``margin`` degrees) for any wavelength.

        Intensities include the texture factor of ``instrument`` (or of the model's own preferred orientation).
        """
        instrument = instrument or self.instrument(len(batch), batch.frac.dtype, batch.frac.device)
        lo, hi = self.two_theta_limits(margin, instrument)
        lams = self.wavelength.values
        g_min = 2 * math.sin(math.radians(lo / 2)) / max(lams)
        g_max = 2 * math.sin(math.radians(hi / 2)) / min(lams)
        hkl_np, idx_np = enumerate_hkl(value_of(batch.cell), g_min, g_max)
        dtype, device = batch.frac.dtype, batch.frac.device
        hkl = torch.as_tensor(hkl_np, device=device)
        refl_batch = torch.as_tensor(idx_np, device=device)
        hklf = hkl.to(dtype)

        recip = torch.linalg.inv(batch.cell).transpose(-1, -2)
        g = torch.einsum("mk,mkj->mj", hklf, recip[refl_batch])
        g_norm = torch.linalg.norm(g, dim=-1)
        s = 0.5 * g_norm  # sinθ/λ

        fsq = self._structure_factor_sq(batch, hklf, refl_batch, s, b_iso, occupancy)
        texture = instrument.texture(g, recip, refl_batch)

        lam = torch.as_tensor(lams, dtype=dtype, device=device)
        weights = torch.as_tensor(self.wavelength.weights, dtype=dtype, device=device)
        sin_t = s.unsqueeze(-1) * lam  # (M, L)
        reachable = sin_t < 1.0
        theta = torch.asin(torch.where(reachable, sin_t, torch.full_like(sin_t, 0.5)))
        two_theta = torch.rad2deg(2 * theta)
        in_range = reachable & (two_theta >= lo) & (two_theta <= hi)
        lp = self._lorentz_polarisation(theta)
        power = fsq if texture is None else fsq * texture
        intensity = torch.where(in_range, 2.0 * power.unsqueeze(-1) * lp * weights, torch.zeros_like(lp))
        return Reflections(hkl, refl_batch, 1.0 / g_norm, two_theta, intensity, fsq)

    def _lorentz_polarisation(self, theta: torch.Tensor) -> torch.Tensor:
        sin_t, cos_t = torch.sin(theta), torch.cos(theta)
        lorentz = 1.0 / (sin_t * sin_t * cos_t)
        if self.radiation == "neutron":
            return lorentz
        cos_2t = torch.cos(2 * theta)
        return (1.0 + self.polarization * cos_2t * cos_2t) * lorentz

    def _structure_factor_sq(
        self,
        batch: StructureBatch,
        hklf: torch.Tensor,
        refl_batch: torch.Tensor,
        s: torch.Tensor,
        b_iso: torch.Tensor | None,
        occupancy: torch.Tensor | None,
    ) -> torch.Tensor:
        """``|F|²`` of each reflection, summed over exactly the atoms of its structure (no padding).

        Form factors are evaluated once per (reflection, element of that structure), then looked up for
        each (reflection, atom) term.
        """
        dtype, device = batch.frac.dtype, batch.frac.device
        n_atoms = batch.n_atoms
        atom_offset = torch.cumsum(n_atoms, 0) - n_atoms
        # the distinct elements of each structure: ids of (structure, Z), in structure order
        key = batch.batch_idx * 256 + batch.numbers
        uniq, species_of_atom = torch.unique(key, return_inverse=True)
        species_batch, species_z = uniq // 256, uniq % 256
        n_species = torch.bincount(species_batch, minlength=len(batch))
        species_offset = torch.cumsum(n_species, 0) - n_species
        local_species = species_of_atom - species_offset[batch.batch_idx]

        # (reflection, element) pairs → scattering power
        rs_refl, rs_start = _expand(n_species[refl_batch])
        rs_species = species_offset[refl_batch][rs_refl] + (
            torch.arange(rs_refl.shape[0], device=device) - rs_start[rs_refl]
        )
        if self.radiation == "xray":
            f_rs = xray_form_factor(
                species_z[rs_species].unsqueeze(-1), s[rs_refl].unsqueeze(-1), self.form_factors
            ).reshape(-1)
        else:
            b = neutron_scattering_length(species_z, dtype, self.neutron_lengths)
            f_rs = b[rs_species]

        # (reflection, atom) pairs → terms of the structure factor
        ra_refl, _ = _expand(n_atoms[refl_batch])
        ra_start = torch.cumsum(n_atoms[refl_batch], 0) - n_atoms[refl_batch]
        ra_atom = atom_offset[refl_batch][ra_refl] + (torch.arange(ra_refl.shape[0], device=device) - ra_start[ra_refl])
        f = f_rs[rs_start[ra_refl] + local_species[ra_atom]]
        if occupancy is not None:
            f = f * occupancy.to(dtype)[ra_atom]
        if b_iso is None and self.b_iso != 0.0:
            b_iso = torch.full_like(batch.frac[:, 0], self.b_iso)
        if b_iso is not None:
            s_pair = s[ra_refl]
            f = f * torch.exp(-b_iso.to(dtype)[ra_atom] * s_pair * s_pair)
        phase = 2 * math.pi * (hklf[ra_refl] * batch.frac[ra_atom]).sum(-1)
        n_refl = hklf.shape[0]
        real = torch.zeros(n_refl, dtype=dtype, device=device).index_add(0, ra_refl, f * torch.cos(phase))
        imag = torch.zeros(n_refl, dtype=dtype, device=device).index_add(0, ra_refl, f * torch.sin(phase))
        return real * real + imag * imag

    # --- pattern ------------------------------------------------------------------------------------
    @property
    def _window(self) -> tuple[float | None, float | None]:
        """``(cutoff, step)`` of the peak windows (:func:`~atomdiff.physics.profile.profile_sum`)."""
        return self.profile.cutoff, self.uniform_step

    def peaks(
        self,
        batch: StructureBatch,
        b_iso: torch.Tensor | None = None,
        occupancy: torch.Tensor | None = None,
        instrument: Instrument | None = None,
    ) -> PeakList:
        """The peaks of every structure on this model's axis (observed positions, widths, integrated
        intensities), before they are summed onto the grid (:meth:`forward` = :func:`profile_sum` of these)."""
        dtype, device = batch.frac.dtype, batch.frac.device
        instrument = instrument or self.instrument(len(batch), dtype, device)
        theta_hi = torch.full((len(batch),), math.radians(89.0), dtype=dtype, device=device)
        widest = float(value_of(instrument.fwhm(theta_hi.unsqueeze(-1), torch.arange(len(batch), device=device))).max())
        margin = min(max(3.0 * widest, 1.0), 20.0)
        refl = self.reflections(batch, b_iso, occupancy, margin=margin, instrument=instrument)
        theta = torch.deg2rad(refl.two_theta / 2)
        centre = refl.two_theta + instrument.zero_shift[refl.batch_idx].unsqueeze(-1)  # observed 2θ, degrees
        width = instrument.fwhm(theta, refl.batch_idx)
        if self.axis == "q":
            lam = self.wavelength.primary
            obs_theta = torch.deg2rad(centre / 2)
            centre = 4 * math.pi * torch.sin(obs_theta) / lam
            width = width * (2 * math.pi / lam) * torch.cos(obs_theta) * (math.pi / 180.0)
        eta = instrument.eta.to(dtype)
        return PeakList.build(centre, width, refl.intensity, refl.batch_idx, eta, len(batch), self.uniform_step)

    def forward(
        self,
        batch: StructureBatch,
        b_iso: torch.Tensor | None = None,
        occupancy: torch.Tensor | None = None,
        scale: torch.Tensor | float = 1.0,
        instrument: Instrument | None = None,
    ) -> Pattern:
        """Pattern on the grid, shape ``(n_structures, n_points)``; ``b_iso`` and ``occupancy`` are per atom.

        ``instrument`` gives per-structure (differentiable) profile, zero shift and texture in place of the
        model's own.
        """
        x = self.x.to(batch.frac.dtype)
        y = profile_sum(x, self.peaks(batch, b_iso, occupancy, instrument), *self._window)
        y = y * (scale if not torch.is_tensor(scale) else scale.reshape(-1, 1))
        if self.background is not None:
            y = y + chebyshev_background(x, self.background)
        return Pattern(x, y, self.axis, "intensity")


def _expand(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``counts`` (n,): the owner of each of the ``sum(counts)`` items, and each owner's first item."""
    owner = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)
    return owner, torch.cumsum(counts, 0) - counts


def check_grid(x: torch.Tensor, axis: str, wavelength: Wavelength) -> None:
    """Raise :class:`InputError` if a 2θ/Q grid is empty, not finite, not increasing or out of range."""
    if x.ndim != 1 or x.numel() < 2:
        raise InputError("the pattern grid needs at least 2 points")
    if not torch.isfinite(x).all():
        raise InputError("the pattern grid has NaN or infinite values")
    if not (x[1:] > x[:-1]).all():
        raise InputError("the pattern grid must be strictly increasing")
    if axis == "two_theta" and (float(x[0]) <= 0.0 or float(x[-1]) >= 180.0):
        raise InputError(f"2θ range must lie within (0, 180) degrees, got {float(x[0]):g} to {float(x[-1]):g}")
    if axis == "q":
        q_max = 4 * math.pi / wavelength.primary
        if float(x[0]) <= 0.0 or float(x[-1]) >= q_max:
            raise InputError(
                f"Q range must lie within (0, {q_max:.4g}) Å⁻¹ for λ = {wavelength.primary:g} Å, "
                f"got {float(x[0]):g} to {float(x[-1]):g}"
            )


def two_theta_grid(start: float, stop: float, step: float) -> torch.Tensor:
    """``start, start+step, …, ≤ stop`` in degrees, checked for a sensible range."""
    for name, value in (("start", start), ("stop", stop), ("step", step)):
        if not math.isfinite(value):
            raise InputError(f"2θ {name} must be a finite number, got {value}")
    if step <= 0:
        raise InputError(f"2θ step must be positive, got {step}")
    if not 0.0 < start < stop < 180.0:
        raise InputError(f"2θ range must satisfy 0 < start < stop < 180 degrees, got {start:g} to {stop:g}")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    return start + step * torch.arange(n, dtype=torch.float64)


# --- peak lists ------------------------------------------------------------------------------------------
PEAK_COLUMNS = ("two_theta", "d_spacing", "h", "k", "l", "multiplicity", "intensity")


def peak_table(
    model: PowderDiffractionModel,
    structure: Structure,
    b_iso: np.ndarray | None = None,
    tolerance: float = 1e-5,
    min_intensity: float = 1e-3,
) -> list[dict[str, float | int]]:
    """Peaks at the primary wavelength inside the grid's range, reflections at the same 2θ merged.

    Returns rows with :data:`PEAK_COLUMNS` (2θ without zero shift, degrees; d in Å; a representative hkl;
    multiplicity counting +hkl and −hkl; intensity scaled so that the strongest peak is 100), sorted by 2θ.
    Peaks weaker than ``min_intensity`` (on that scale) are dropped.
    """
    batch = StructureBatch.from_structures([structure])
    single = PowderDiffractionModel(
        model.radiation,
        Wavelength((model.wavelength.primary,), (1.0,)),
        model.x,
        model.axis,
        model.profile,
        model.zero_shift,
        None,
        model.polarization,
        model.b_iso,
        model.form_factors,
        model.neutron_lengths,
        model.po_ratio,
        model.po_direction,
    )
    with torch.no_grad():
        b = None if b_iso is None else torch.as_tensor(b_iso, dtype=torch.float64)
        refl = single.reflections(batch, b)
    keep = (refl.intensity[:, 0] > 0).numpy()
    tth = refl.two_theta[:, 0].numpy()[keep]
    inten = refl.intensity[:, 0].numpy()[keep]
    d = refl.d.numpy()[keep]
    hkl = refl.hkl.numpy()[keep]
    if tth.size == 0:
        return []
    order = np.argsort(tth, kind="stable")
    tth, inten, d, hkl = tth[order], inten[order], d[order], hkl[order]
    groups = np.concatenate([[0], np.cumsum(np.diff(tth) > tolerance)])
    rows = []
    for gidx in range(int(groups[-1]) + 1):
        members = np.nonzero(groups == gidx)[0]
        family = [tuple(int(v) for v in hkl[m]) for m in members]
        family += [tuple(-v for v in f) for f in family]
        rep = max(family, key=lambda t: (min(t) >= 0, t))
        rows.append(
            {
                "two_theta": float(tth[members].mean()),
                "d_spacing": float(d[members].mean()),
                "h": rep[0],
                "k": rep[1],
                "l": rep[2],
                "multiplicity": 2 * len(members),
                "intensity": float(inten[members].sum()),
            }
        )
    top = max(r["intensity"] for r in rows)
    for r in rows:
        r["intensity"] = 100.0 * r["intensity"] / top
    return [r for r in rows if r["intensity"] > min_intensity]
