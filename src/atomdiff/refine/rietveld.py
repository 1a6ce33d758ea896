"""Rietveld refinement of many candidate structures at once against one measured pattern.

Each candidate is refined independently (its own parameters) but all are evaluated together in one batch.
Refined per candidate: lattice (a symmetric strain of the starting cell, 6 parameters), atomic positions
(P1, 3 per atom), isotropic displacement B per element, zero shift, Caglioti U, V, W, pseudo-Voigt eta and,
optionally, a March–Dollase texture ratio. With ``symmetry=`` the lattice strains and positions are instead
only those that keep each candidate's space group (:mod:`atomdiff.refine.symmetry`). The scale factor and the
Chebyshev background are linear and are solved exactly at every evaluation
(:class:`~atomdiff.physics.target.PatternTarget`).

The minimiser is Levenberg–Marquardt, as in GSAS-II and FullProf, with the Jacobian of the weighted residuals
computed exactly by forward-mode automatic differentiation (one pass vectorised over the parameters, batched
over candidates).
We write it here rather than call ``scipy.optimize.least_squares`` because that works on one problem at a
time and would need the Jacobian per candidate; batching the candidates is what makes ranking 20 of them
fast. Refinement starts with a scan of the cell volume and with peaks broadened by extra Gaussian width that
is then removed step by step, so that a candidate whose lattice is a few per cent off still converges.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jvp, vmap

from atomdiff.errors import InputError
from atomdiff.physics.profile import Instrument, PeakList, Profile, chebyshev_background, profile_sum_jvp
from atomdiff.physics.target import PatternFit, PatternTarget
from atomdiff.refine.symmetry import SymmetryConstraints, symmetrised, symmetry_constraints
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import chemical_symbols
from atomdiff.structure.structure import Structure

#: largest change of a parameter in one iteration (strain, fractional shift, degrees, degrees², Å², ratio)
_MAX_STEP = {
    "strain": 0.01,
    "dfrac": 0.01,
    "strain_free": 0.01,
    "pos_free": 0.01,
    "zero": 0.05,
    "uvw": 0.01,
    "eta": 0.1,
    "b": 0.5,
    "po": 0.1,
}

#: parameter groups that can be refined
TEXTURE_SCAN = (0.6, 0.75, 0.9, 1.0, 1.15, 1.35, 1.6)
"""March–Dollase ratios tried before the texture ratio is refined."""
_PEAK_FIELDS = ("centre", "fwhm", "area", "eta")
GROUPS = ("lattice", "zero_shift", "width", "profile", "b_iso", "positions", "texture")


@dataclasses.dataclass
class RefinementStage:
    """One Levenberg–Marquardt stage: which groups are free, extra peak broadening, iterations."""

    groups: tuple[str, ...]
    extra_fwhm: float = 0.0
    iterations: int = 10


#: the default schedule: coarse lattice and zero with broadened peaks, then everything
DEFAULT_STAGES = (
    RefinementStage(("lattice", "zero_shift"), extra_fwhm=0.4, iterations=4),
    RefinementStage(("lattice", "zero_shift"), extra_fwhm=0.12, iterations=4),
    RefinementStage(("lattice", "zero_shift", "profile"), extra_fwhm=0.0, iterations=5),
    RefinementStage(("lattice", "zero_shift", "profile", "b_iso", "positions"), extra_fwhm=0.0, iterations=6),
)


@dataclasses.dataclass
class Refinement:
    """The result of refining one candidate."""

    structure: Structure
    rwp: float
    scale: float
    zero_shift: float
    profile: Profile
    b_iso: dict[str, float]
    texture_ratio: float | None
    y_calc: np.ndarray
    background: np.ndarray
    n_parameters: int
    start_rwp: float
    complete: bool = True
    space_group: str | None = None
    """The space group the refinement kept (``RietveldRefiner(symmetry=...)``), or ``None`` (refined in P1)."""

    def summary(self) -> dict[str, float | str]:
        return {
            "rwp": self.rwp,
            "start_rwp": self.start_rwp,
            "scale": self.scale,
            "zero_shift": self.zero_shift,
            "u": self.profile.u,
            "v": self.profile.v,
            "w": self.profile.w,
            "eta": self.profile.eta,
            "b_iso": ";".join(f"{k}={v:.3f}" for k, v in self.b_iso.items()),
            "n_parameters": self.n_parameters,
            "complete": self.complete,
            "space_group": self.space_group or "",
        }


class _State:
    """The refinable parameters of a batch of candidates, as plain tensors (one row per candidate)."""

    def __init__(
        self,
        structures: Sequence[Structure],
        profile: Profile,
        zero_shift: float,
        texture: Sequence[float],
        constraints: Sequence[SymmetryConstraints] | None = None,
    ):
        self.batch = StructureBatch.from_structures(list(structures)).to(dtype=torch.float64)
        n = len(structures)
        self.n = n
        self.strain = torch.zeros(n, 6, dtype=torch.float64)
        self.dfrac = torch.zeros(self.batch.frac.shape, dtype=torch.float64)
        self.constraints = None if constraints is None else list(constraints)
        if self.constraints is not None:
            self._constrain(self.constraints)
        self.params = ("strain", "dfrac") if self.constraints is None else ("strain_free", "pos_free")
        self.params = (*self.params, "zero", "uvw", "eta", "po", "b")
        self.zero = torch.full((n,), float(zero_shift), dtype=torch.float64)
        self.uvw = torch.tensor([[profile.u, profile.v, profile.w]], dtype=torch.float64).repeat(n, 1)
        self.eta = torch.full((n,), float(profile.eta), dtype=torch.float64)
        self.po = torch.ones(n, dtype=torch.float64)
        self.po_direction = torch.tensor(list(texture), dtype=torch.float64).expand(n, 3)
        # one B per (candidate, element)
        key = self.batch.batch_idx * 256 + self.batch.numbers
        uniq, self.b_of_atom = torch.unique(key, return_inverse=True)
        self.b_owner, self.b_element = uniq // 256, uniq % 256
        self.b = torch.full((uniq.shape[0],), 0.5, dtype=torch.float64)
        # whose coordinates a "positions" group frees (RietveldRefiner(fixed_positions=...))
        self.position_free = torch.ones(n, dtype=torch.bool)

    def _constrain(self, constraints: Sequence[SymmetryConstraints]) -> None:
        """Space-group parameters in place of P1 ones: strain = basis · strain_free per candidate, all
        fractional displacements = pos_basis · pos_free (block-diagonal over candidates)."""
        if len(constraints) != self.n:
            raise InputError(f"{len(constraints)} sets of symmetry constraints for {self.n} structures")
        counts = torch.bincount(self.batch.batch_idx, minlength=self.n).tolist()
        k_max = max(c.n_lattice for c in constraints)
        self.strain_basis = torch.zeros(self.n, 6, k_max, dtype=torch.float64)
        self.strain_used = torch.zeros(self.n, k_max, dtype=torch.bool)
        f_total = sum(c.n_positions for c in constraints)
        self.pos_basis = torch.zeros(3 * int(self.batch.numbers.shape[0]), f_total, dtype=torch.float64)
        owners = []
        row = col = 0
        for i, (c, n_atoms) in enumerate(zip(constraints, counts, strict=True)):
            if c.position_basis.shape[0] != 3 * n_atoms:
                have = c.position_basis.shape[0] // 3
                raise InputError(f"symmetry constraints of structure {i} are for {have} atoms, it has {n_atoms}")
            self.strain_basis[i, :, : c.n_lattice] = torch.as_tensor(c.strain_basis)
            self.strain_used[i, : c.n_lattice] = True
            self.pos_basis[row : row + 3 * n_atoms, col : col + c.n_positions] = torch.as_tensor(c.position_basis)
            owners.append(torch.full((c.n_positions,), i))
            row, col = row + 3 * n_atoms, col + c.n_positions
        self.pos_owner = torch.cat(owners) if owners else torch.zeros(0, dtype=torch.long)
        self.strain_free = torch.zeros(self.n, k_max, dtype=torch.float64)
        self.pos_free = torch.zeros(f_total, dtype=torch.float64)

    # parameter groups: (tensor attribute, owner of each scalar) -----------------------------------------
    def blocks(self, groups: Sequence[str]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """``(attribute, index into the flattened attribute, owner candidate)`` for each free scalar group."""
        n = self.n
        ar = torch.arange(n)
        out = []
        for g in groups:
            if g == "lattice" and self.constraints is not None:
                flat = torch.nonzero(self.strain_used.view(-1)).flatten()
                out.append(("strain_free", flat, flat // self.strain_used.shape[1]))
            elif g == "lattice":
                out.append(("strain", ar.repeat_interleave(6) * 6 + torch.arange(6).repeat(n), ar.repeat_interleave(6)))
            elif g == "zero_shift":
                out.append(("zero", ar, ar))
            elif g == "width":
                out.append(("uvw", ar * 3 + 2, ar))
            elif g == "profile":
                out.append(("uvw", torch.arange(3 * n), ar.repeat_interleave(3)))
                out.append(("eta", ar, ar))
            elif g == "b_iso":
                out.append(("b", torch.arange(self.b.shape[0]), self.b_owner))
            elif g == "positions":
                if self.constraints is not None:
                    attr, owner = "pos_free", self.pos_owner
                else:
                    attr, owner = "dfrac", self.batch.batch_idx.repeat_interleave(3)
                free = self.position_free[owner]
                if bool(free.any()):
                    out.append((attr, torch.nonzero(free).flatten(), owner[free]))
            elif g == "texture":
                out.append(("po", ar, ar))
            else:
                raise InputError(f"unknown refinement group {g!r}; choose from {', '.join(GROUPS)}")
        return out

    def clamp(self) -> None:
        """Keep parameters physical and steps bounded (a candidate far from the data must not run away)."""
        self.strain.clamp_(-0.15, 0.15)
        self.dfrac.clamp_(-0.1, 0.1)
        if self.constraints is not None:
            self.strain_free.clamp_(-0.15, 0.15)
            self.pos_free.clamp_(-0.1, 0.1)
        self.zero.clamp_(-1.0, 1.0)
        # Caglioti U ≥ 0, W > 0 and FWHM below ~1° over 2θ < 160°: sharper than any real powder line is
        # not physical, broader lets a wrong structure smear its peaks into the background (and costs time)
        self.uvw[:, 0].clamp_(0.0, 0.03)
        self.uvw[:, 1].clamp_(-0.1, 0.1)
        self.uvw[:, 2].clamp_(1e-4, 0.5)
        # and FWHM² = U t² + V t + W positive at every angle (V ≥ −2√(UW); 0.9 of it keeps FWHM² ≥ 0.19 W): a
        # minor phase of a mixture, whose few peaks barely constrain its widths, otherwise ran off to a width
        # of zero over part of the range (measured: seven generated phases of a kesterite pattern)
        self.uvw[:, 1].clamp_(min=-1.8 * torch.sqrt(self.uvw[:, 0] * self.uvw[:, 2]))
        self.eta.clamp_(0.0, 1.0)
        self.b.clamp_(0.0, 8.0)
        self.po.clamp_(0.3, 3.0)

    def copy(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).clone() for k in self.params}

    def restore(self, saved: dict[str, torch.Tensor], which: torch.Tensor) -> None:
        """Put back the saved values of the candidates where ``which`` (bool, (n,)) is true."""
        for k, v in saved.items():
            cur = getattr(self, k)
            owner = self._owner_of(k)
            mask = which[owner]
            cur[mask] = v[mask]

    def _owner_of(self, attr: str) -> torch.Tensor:
        if attr == "dfrac":
            return self.batch.batch_idx
        if attr == "b":
            return self.b_owner
        if attr == "pos_free":
            return self.pos_owner
        return torch.arange(self.n)

    def subset(self, keep: torch.Tensor, profile: Profile, zero_shift: float, texture: Sequence[float]) -> _State:
        """A state of the candidates ``keep`` with their current lattice and positions baked into the
        structures (strain and shifts reset to 0) and every other parameter carried over."""
        with torch.no_grad():
            batch, _, _ = self.structures_and_instrument(self.values(), 0.0, False)
        structures = batch.to_structures()
        constraints = None if self.constraints is None else [self.constraints[int(i)] for i in keep]
        out = _State([structures[int(i)] for i in keep], profile, zero_shift, texture, constraints)
        out.position_free = self.position_free[keep].clone()
        for attr in ("zero", "uvw", "eta", "po"):
            setattr(out, attr, getattr(self, attr)[keep].clone())
        for j in range(out.b.shape[0]):
            owner, z = int(keep[out.b_owner[j]]), int(out.b_element[j])
            out.b[j] = self.b[(self.b_owner == owner) & (self.b_element == z)][0]
        return out

    # evaluation -----------------------------------------------------------------------------------------
    def structures_and_instrument(
        self, values: dict[str, torch.Tensor], extra_fwhm: float, texture: bool
    ) -> tuple[StructureBatch, Instrument, torch.Tensor]:
        if self.constraints is not None:
            e = torch.einsum("nik,nk->ni", self.strain_basis, values["strain_free"])
            dfrac = (self.pos_basis @ values["pos_free"]).view(-1, 3)
        else:
            e, dfrac = values["strain"], values["dfrac"]
        sym = torch.stack(
            [
                torch.stack([e[:, 0], e[:, 3], e[:, 4]], -1),
                torch.stack([e[:, 3], e[:, 1], e[:, 5]], -1),
                torch.stack([e[:, 4], e[:, 5], e[:, 2]], -1),
            ],
            -2,
        )
        eye = torch.eye(3, dtype=torch.float64)
        cell = self.batch.cell @ (eye + sym)
        frac = self.batch.frac + dfrac
        batch = StructureBatch(self.batch.numbers, frac, cell, self.batch.batch_idx, self.batch.pbc)
        uvw = values["uvw"]
        inst = Instrument(values["zero"], uvw[:, 0], uvw[:, 1], uvw[:, 2], values["eta"])
        if extra_fwhm > 0:
            inst.extra_fwhm = torch.full((self.n,), float(extra_fwhm), dtype=torch.float64)
        if texture:
            inst.po_ratio = values["po"]
            inst.po_direction = self.po_direction
        b_atom = values["b"][self.b_of_atom]
        return batch, inst, b_atom

    def values(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.params}


def unique_axis(structure: Structure, symprec: float = 1e-3) -> np.ndarray | None:
    """The Cartesian unit vector of a structure's unique rotation axis (the 3-, 4- or 6-fold axis of a
    tetragonal, trigonal or hexagonal structure), or ``None`` (cubic, lower symmetry, or no symmetry found)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        ops = SpacegroupAnalyzer(structure.to_pymatgen(), symprec=symprec).get_symmetry_operations(cartesian=True)
    except Exception:  # spglib gives up on some cells: no axis
        return None
    axes = []
    for op in ops:
        rot = np.asarray(op.rotation_matrix)
        proper = rot * np.sign(np.linalg.det(rot))
        trace = np.trace(proper)
        if trace > 2.5 or trace < -0.5:  # identity or a two-fold rotation
            continue
        w, v = np.linalg.eig(proper)
        axis = np.real(v[:, np.argmin(np.abs(w - 1))])
        axes.append(axis / np.linalg.norm(axis))
    if not axes:
        return None
    first = axes[0]
    if any(abs(abs(float(a @ first)) - 1) > 1e-6 for a in axes):
        return None  # several axes: cubic
    return first


class RietveldRefiner:
    """Refine candidate structures against a :class:`PatternTarget`.

    Args:
        target: the measured pattern and its forward model (radiation, wavelength, grid).
        profile: starting peak shape (U, V, W, eta).
        zero_shift: starting zero shift, degrees.
        stages: the refinement schedule.
        volume_scan: ``(min, max, n)`` isotropic scale factors of the cell tried before refining (``None``
            to skip); the best one by Rwp with broadened peaks is kept.
        axial_scan: ``(span, n, extra FWHM)``: for candidates with a unique axis (tetragonal, trigonal,
            hexagonal), a grid of n × n strains within ±span along and across that axis, scored with that extra
            peak width, starts a third path of the sharp lattice stages (:meth:`_early_stages`); ``None`` to
            skip.
        texture: a March–Dollase direction (hkl) to refine a texture ratio along, or ``None``.
        keep: refine only this many candidates (the best by Rwp so far) through the last stage; the others
            are returned as they were after the previous stage (``complete=False``).
        mixture: the structures are the phases of one sample, refined jointly (one scale each, one background,
            one zero shift); every result then carries the joint Rwp and fit.
        jacobian: ``"peaks"`` (forward-mode passes only through the peak list, shapes summed once:
            :meth:`_jacobian`) or ``"passes"`` (a pass through the whole model per column; the reference).
        symmetry: refine each structure in the space group spglib finds in it within this tolerance (Å): the
            structure is first made exactly symmetric (:func:`~atomdiff.refine.symmetry.symmetrised`), then
            only the lattice parameters and coordinates that keep the group are free
            (:func:`~atomdiff.refine.symmetry.symmetry_constraints`); ``None`` refines in P1.
        fixed_positions: one flag per structure (in :meth:`refine`'s order): ``True`` keeps its coordinates
            where they are in "positions" stages (a minor phase of a mixture, whose few peaks cannot fix them);
            ``None`` frees every structure's.
    """

    def __init__(
        self,
        target: PatternTarget,
        profile: Profile | None = None,
        zero_shift: float = 0.0,
        stages: Sequence[RefinementStage] = DEFAULT_STAGES,
        volume_scan: tuple[float, float, int] | None = (0.94, 1.06, 25),
        axial_scan: tuple[float, int, float] | None = (0.03, 41, 0.03),
        texture: Sequence[float] | None = None,
        keep: int | None = None,
        mixture: bool = False,
        jacobian: str = "peaks",
        symmetry: float | None = None,
        fixed_positions: Sequence[bool] | None = None,
    ):
        if jacobian not in ("peaks", "passes"):
            raise InputError(f"jacobian must be 'peaks' or 'passes', got {jacobian!r}")
        if symmetry is not None and not symmetry > 0:
            raise InputError(f"the symmetry tolerance must be positive (Å), got {symmetry}")
        self.symmetry = symmetry
        self.fixed_positions = None if fixed_positions is None else tuple(bool(f) for f in fixed_positions)
        self.jacobian = jacobian
        self.target = target
        self.keep = keep
        self.mixture = mixture
        self.profile = profile or Profile(u=0.0, v=0.0, w=0.01, eta=0.5)
        self.zero_shift = float(zero_shift)
        self.stages = tuple(stages)
        self.volume_scan = volume_scan
        self.axial_scan = axial_scan
        self.texture = None if texture is None else tuple(float(v) for v in texture)
        for stage in self.stages:
            for g in stage.groups:
                if g not in GROUPS:
                    raise InputError(f"unknown refinement group {g!r}; choose from {', '.join(GROUPS)}")

    # ---------------------------------------------------------------------------------------------------
    def _fit(self, state: _State, values: dict[str, torch.Tensor], extra: float) -> PatternFit:
        batch, inst, b_atom = state.structures_and_instrument(values, extra, self.texture is not None)
        # broadened stages run on a grid coarsened to the broadening (PatternTarget.coarse): same landscape
        return self.target.coarse(extra).fit(batch, inst, b_atom, mixture=self.mixture)

    def _scan_volume(self, state: _State) -> None:
        lo, hi, k = self.volume_scan
        factors = torch.linspace(lo, hi, int(k), dtype=torch.float64)
        n = state.n
        structures = state.batch.to_structures()
        scaled = [s.replace(cell=s.cell * float(f)) for s in structures for f in factors]
        probe = _State(scaled, self.profile, self.zero_shift, self.texture or (0, 0, 1))
        with torch.no_grad():
            fit = self._fit(probe, probe.values(), extra=0.4)
        best = fit.rwp.view(n, int(k)).argmin(-1)
        f = factors[best]
        state.batch = StructureBatch(
            state.batch.numbers,
            state.batch.frac,
            state.batch.cell * f.view(-1, 1, 1),
            state.batch.batch_idx,
            state.batch.pbc,
        )

    def _scan_axial(self, state: _State, axes: Sequence[np.ndarray | None]) -> None:
        """Each cell with a unique axis (unit vector, Cartesian) set to the best of a grid of strains along and
        across it (the symmetry is kept), scored with slightly broadened peaks; cells without one are left.
        Least squares cannot cross a swap of split peaks: a pseudo-cubic tetragonal cell with c/a on the wrong
        side of the truth stays there, since every path between passes through merged peaks (a kesterite
        sample held at c/2a = 0.996, true 1.002, refined to Rwp 22.4 %; with this grid to 7.9 %). The default
        grid spans ±3 % in steps of 0.15 %: CHGNet relaxes kesterite to a c/2a 3.8 % below the measured one
        (a +1.8 %, c −1.8 %), and such a sample refined to 45.2 % with a ±1 % grid, to 6.19 % with this one."""
        span, k, extra = self.axial_scan
        grid = torch.linspace(-span, span, int(k), dtype=torch.float64)
        along, across = (g.flatten() for g in torch.meshgrid(grid, grid, indexing="ij"))
        eye = torch.eye(3, dtype=torch.float64)
        structures = state.batch.to_structures()
        cells = state.batch.cell.clone()
        for i, axis in enumerate(axes):
            if axis is None:
                continue
            u = torch.as_tensor(axis, dtype=torch.float64)
            uu = torch.outer(u, u)
            trial = cells[i] @ (eye + along.view(-1, 1, 1) * uu + across.view(-1, 1, 1) * (eye - uu))
            probe = _State(
                [structures[i].replace(cell=c.numpy()) for c in trial], self.profile, self.zero_shift, (0, 0, 1)
            )
            probe.zero = state.zero[i].expand(len(trial)).clone()
            probe.uvw = state.uvw[i].expand(len(trial), 3).clone()
            probe.eta = state.eta[i].expand(len(trial)).clone()
            with torch.no_grad():
                best = int(self._fit(probe, probe.values(), extra).rwp.argmin())
            cells[i] = trial[best]
        state.batch = state.batch.replace(cell=cells)

    def _scan_texture(self, state: _State, extra: float) -> None:
        """Start the texture ratio at the best of a few values: at a ratio of 1 the derivative of a reflection
        family's March–Dollase factor averages to zero in cubic (and other high) symmetry, so least squares
        started there never moves."""
        rwp = []
        with torch.no_grad():
            for r in TEXTURE_SCAN:
                state.po.fill_(r)
                rwp.append(self._fit(state, state.values(), extra).rwp)
        best = torch.stack(rwp).argmin(0)  # per candidate, or one value for a mixture
        state.po.copy_(torch.as_tensor(TEXTURE_SCAN, dtype=torch.float64)[best].expand(state.n))

    def _jacobian(
        self, state: _State, blocks: list, extra: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted residuals ``(n, m)`` and their Jacobian ``(n, m, p_max)`` by forward-mode AD.

        Column ``k`` is the tangent of the k-th free parameter of every candidate at once (candidates are
        independent), so ``p_max`` columns give the whole Jacobian. They go only as far as the peak list, all in
        one vectorised pass (:meth:`_peak_tangents`); the peak shapes are summed onto the grid once, with all
        columns (:func:`profile_sum_jvp`): 4.5× faster refinement than a pass through the whole model per
        column (:meth:`_jacobian_by_passes`; measured by ``benchmarks/bench_refine.py``, 20 kesterite starts,
        same Rwp, when the peak list still took one pass per column).
        """
        n = 1 if self.mixture else state.n
        owners = torch.cat([owner for _, _, owner in blocks])
        if self.mixture:
            # one problem: every parameter of every phase; the zero shift is the instrument's, shared
            local = torch.arange(owners.shape[0])
            offset = 0
            for attr, index, _owner in blocks:
                if attr == "zero":
                    local[offset : offset + index.shape[0]] = offset
                offset += index.shape[0]
            local = torch.unique(local, return_inverse=True)[1]
            counts = torch.tensor([int(local.max()) + 1])
        else:
            counts = torch.bincount(owners, minlength=n)
            # local index of every free scalar within its candidate's parameter vector
            order = torch.argsort(owners, stable=True)
            start = torch.cumsum(counts, 0) - counts
            local = torch.empty_like(owners)
            local[order] = torch.arange(owners.shape[0]) - start[owners[order]]
        p_max = int(counts.max())
        target = self.target.coarse(extra)  # the grid _fit uses at this broadening
        sqrt_w = target.weights.sqrt()
        yo = target.y_obs
        base = {k: v.detach() for k, v in state.values().items()}
        tangents: dict[str, torch.Tensor] = {}
        offset = 0
        for attr, index, _owner in blocks:
            size = index.shape[0]
            k = local[offset : offset + size]
            offset += size
            t = tangents.setdefault(attr, torch.zeros(p_max, base[attr].numel(), dtype=torch.float64))
            t[k, index] = 1.0
        if self.jacobian == "passes":
            return (*self._jacobian_by_passes(state, tangents, base, p_max, n, extra), local, counts)
        # the peaks (positions, widths, areas, Lorentzian fractions) and their derivatives along each free
        # parameter, by one vectorised forward-mode pass through the cheap part of the model; the expensive sum
        # of peak shapes onto the grid then runs once for all columns (profile_sum_jvp)
        model = target.model
        peaks, columns = self._peak_tangents(state, base, tangents, extra)
        x = model.x.to(torch.float64)
        y_struct, dy = profile_sum_jvp(x, peaks, columns, *model._window)
        if model.background is not None:
            y_struct = y_struct + chebyshev_background(x, model.background)
        # scale and background are solved linearly for every evaluation: differentiate through that fit too
        # (a mixture's phases with a positive scale chosen once, from the values: see PatternTarget.active_phases)
        active = target.active_phases(y_struct) if self.mixture else None
        resid = sqrt_w * (yo - target.fit_patterns(y_struct, self.mixture, active=active).y_calc)

        def fitted(y: torch.Tensor) -> torch.Tensor:
            return target.fit_patterns(y, self.mixture, active=active).y_calc

        tangent = vmap(lambda t: jvp(fitted, (y_struct,), (t,))[1], in_dims=-1, out_dims=-1)(dy)  # (n, m, p_max)
        jac = -(sqrt_w.unsqueeze(-1) * tangent)
        return resid, jac, local, counts

    def _peak_tangents(
        self, state: _State, base: dict[str, torch.Tensor], tangents: dict[str, torch.Tensor], extra: float
    ) -> tuple[PeakList, dict[str, torch.Tensor]]:
        """The peak list at ``base`` and the derivative of each peak's centre, FWHM, area and Lorentzian fraction
        along each of the ``K`` directions of ``tangents`` (``attribute → (K, numel)``), ``(M, K)`` per field.

        All K columns in one forward-mode pass vectorised over the directions (``torch.func.vmap`` of
        ``torch.func.jvp``). One ``torch.autograd.forward_ad`` pass per column gives the same numbers, but
        every operation between a dual tensor and a plain one (a cell, a constant) has an undefined tangent
        that PyTorch fills with an "efficient zero tensor", whose shape is worked out by Python meta kernels:
        ~0.1–0.2 ms per operation, paid K times (measured with torch 2.13: ``a * 2.0`` on a dual tensor 236 µs,
        on two dual tensors 7 µs)."""
        model = self.target.model
        texture = self.texture is not None
        attrs = list(tangents)
        primals = tuple(base[a] for a in attrs)

        def fields(*values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            batch, inst, b_atom = state.structures_and_instrument(
                {**base, **dict(zip(attrs, values, strict=True))}, extra, texture
            )
            p = model.peaks(batch, b_iso=b_atom, instrument=inst)
            return tuple(getattr(p, name) for name in _PEAK_FIELDS)

        with torch.no_grad():  # the peak list itself (its owners too), once: the pass below gives tangents
            batch, inst, b_atom = state.structures_and_instrument(base, extra, texture)
            peaks = model.peaks(batch, b_iso=b_atom, instrument=inst)
        directions = tuple(tangents[a].view(tangents[a].shape[0], *base[a].shape) for a in attrs)
        columns = vmap(lambda *t: jvp(fields, primals, t)[1])(*directions)  # each (K, M)
        return peaks, {name: c.transpose(0, 1).contiguous() for name, c in zip(_PEAK_FIELDS, columns, strict=True)}

    def _jacobian_by_passes(
        self, state: _State, tangents: dict[str, torch.Tensor], base: dict[str, torch.Tensor], p_max: int, n: int, extra
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals and Jacobian by one forward-mode pass through the whole model per column (``jacobian=
        "passes"``): the straightforward way, kept as the reference the peak-list Jacobian is tested and
        benchmarked against (``benchmarks/bench_refine.py``)."""
        target = self.target.coarse(extra)
        sqrt_w, yo = target.weights.sqrt(), target.y_obs
        jac = torch.zeros(n, yo.shape[0], p_max, dtype=torch.float64)
        resid = None
        for k in range(p_max):
            with fwAD.dual_level():
                duals = {a: fwAD.make_dual(base[a], t[k].view_as(base[a])) for a, t in tangents.items()}
                primal, tangent = fwAD.unpack_dual(self._fit(state, {**base, **duals}, extra).y_calc)
            if resid is None:
                resid = sqrt_w * (yo - primal.detach())
            if tangent is not None:
                jac[:, :, k] = -(sqrt_w * tangent)
        return resid, jac

    def _blocks(self, state: _State, groups: Sequence[str]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """The free parameters of ``groups`` (:meth:`_State.blocks`), owned by one problem for a mixture (all
        phases form one least-squares problem) or by their candidate."""
        blocks = state.blocks(groups)
        if self.mixture:
            blocks = [(attr, index, torch.zeros_like(owner)) for attr, index, owner in blocks]
        return blocks

    def _lm_stage(self, state: _State, stage: RefinementStage, progress: Callable[[], None] | None) -> torch.Tensor:
        blocks = self._blocks(state, stage.groups)
        n_problems = 1 if self.mixture else state.n
        lam = torch.full((n_problems,), 1e-2, dtype=torch.float64)
        with torch.no_grad():
            wss = self._fit(state, state.values(), stage.extra_fwhm).wss
        max_step = None
        for _ in range(stage.iterations):
            resid, jac, local, counts = self._jacobian(state, blocks, stage.extra_fwhm)
            p_max = jac.shape[-1]
            if max_step is None:
                max_step = torch.full((n_problems, p_max), float("inf"), dtype=torch.float64)
                offset = 0
                for attr, index, owner in blocks:
                    size = index.shape[0]
                    max_step[owner, local[offset : offset + size]] = _MAX_STEP[attr]
                    offset += size
            # work in units of each parameter's trust step, so that one damping floor fits all parameters
            scale = torch.where(torch.isfinite(max_step), max_step, torch.ones_like(max_step))
            jac = jac * scale.unsqueeze(1)
            jtj = jac.transpose(1, 2) @ jac
            jtr = (jac.transpose(1, 2) @ resid.unsqueeze(-1)).squeeze(-1)
            diag = torch.diagonal(jtj, dim1=1, dim2=2)
            unused = torch.arange(p_max).unsqueeze(0) >= counts.unsqueeze(-1)
            # Marquardt scaling with a floor: a direction of (nearly) zero curvature — a shear of a cubic cell,
            # an atom on an inversion centre — gets damped like the others instead of taking a huge step
            floor = 1e-4 * diag.amax(-1, keepdim=True).clamp_min(1e-30)
            damp = lam.unsqueeze(-1) * torch.maximum(diag, floor)
            lhs = jtj + torch.diag_embed(torch.where(unused, torch.ones_like(diag), damp))
            delta = -torch.linalg.solve(lhs, jtr.unsqueeze(-1)).squeeze(-1)  # r(θ+δ) ≈ r + Jδ
            delta = torch.where(unused, torch.zeros_like(delta), delta)
            # trust region: no parameter moves more than its step limit (the direction is kept)
            delta = delta / delta.abs().amax(-1, keepdim=True).clamp_min(1.0)
            delta = delta * scale
            saved = state.copy()
            offset = 0
            for attr, index, owner in blocks:
                size = index.shape[0]
                step = delta[owner, local[offset : offset + size]]
                flat = getattr(state, attr).view(-1)
                flat[index] += step
                offset += size
            state.clamp()
            with torch.no_grad():
                new_wss = self._fit(state, state.values(), stage.extra_fwhm).wss
            better = torch.isfinite(new_wss) & (new_wss < wss)
            state.restore(saved, (~better).expand(state.n) if self.mixture else ~better)
            wss = torch.where(better, new_wss, wss)
            lam = torch.where(better, (lam / 3).clamp_min(1e-7), (lam * 4).clamp_max(1e7))
            if progress is not None:
                progress()
        return wss

    def refine(
        self, structures: Sequence[Structure], progress: Callable[[int, int], None] | None = None
    ) -> list[Refinement]:
        """Refine every structure; results in the input order. ``progress(done, total)`` after each iteration."""
        if not structures:
            return []
        constraints = None
        if self.symmetry is not None:
            structures, constraints = zip(*(self._in_group(x) for x in structures), strict=True)
        state = _State(structures, self.profile, self.zero_shift, self.texture or (0, 0, 1), constraints)
        if self.fixed_positions is not None:
            if len(self.fixed_positions) != state.n:
                raise InputError(f"fixed_positions has {len(self.fixed_positions)} entries for {state.n} structures")
            state.position_free = ~torch.tensor(self.fixed_positions)
        with torch.no_grad():
            start = self._fit(state, state.values(), 0.0).rwp
        if self.volume_scan is not None and not self.mixture:
            self._scan_volume(state)
        stages = list(self.stages)
        if self.texture is not None:
            last = stages[-1]
            stages[-1] = dataclasses.replace(last, groups=(*last.groups, "texture"))
        paths = 2 if self.axial_scan is not None and not self.mixture else 1
        total = sum(s.iterations for s in stages) + paths * sum(s.iterations for s in self._second_path(stages[:-1]))
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        axes = [unique_axis(x) for x in structures] if self.axial_scan is not None and not self.mixture else None
        self._early_stages(state, stages[:-1], tick, axes)
        results = self._results(state, stages[-2].groups if len(stages) > 1 else (), start, complete=False)
        keep = torch.arange(state.n)
        if self.keep is not None and self.keep < state.n and not self.mixture:
            with torch.no_grad():
                wss = self._fit(state, state.values(), stages[-1].extra_fwhm).wss
            keep = torch.argsort(wss)[: self.keep].sort().values
            state = state.subset(keep, self.profile, self.zero_shift, self.texture or (0, 0, 1))
        if self.texture is not None:
            self._scan_texture(state, stages[-1].extra_fwhm)
        self._lm_stage(state, stages[-1], tick)
        final = self._results(state, stages[-1].groups, start if self.mixture else start[keep], True)
        for i, r in zip(keep.tolist(), final, strict=True):
            results[i] = r
        return results

    def _in_group(self, structure: Structure) -> tuple[Structure, SymmetryConstraints]:
        """``structure`` made exactly symmetric and the parameters that keep its group (found again at a tight
        tolerance); P1 when that fails (a cell spglib cannot handle), so that one odd candidate does not stop
        the refinement of the others."""
        try:
            exact = symmetrised(structure, self.symmetry)
            return exact, symmetry_constraints(exact, min(self.symmetry, 1e-3))
        except InputError:
            return structure, SymmetryConstraints.p1(len(structure))

    def _second_path(self, stages: Sequence[RefinementStage]) -> list[RefinementStage]:
        """The sharp stages that :meth:`_early_stages` runs a second time (none when the early stages are not
        broadened stages followed by sharp ones, or for a mixture)."""
        broad = [s for s in stages if s.extra_fwhm > 0]
        sharp = [s for s in stages if s.extra_fwhm <= 0]
        if self.mixture or not broad or not sharp or list(stages) != broad + sharp:
            return []
        return sharp

    def _early_stages(self, state: _State, stages: Sequence[RefinementStage], tick, axes=None) -> None:
        """The stages before the last. Broadened stages pull a rough lattice into the basin of the right one, but
        they also pull a lattice that was already right off it: with split peaks merged, a tetragonal c/a is
        free (kesterite's own cell refined to Rwp 12.5 % after them and 6.2 % without, on the bundled
        pattern). So the sharp stages run from the broadened result and from the start and, for candidates
        with a unique axis (``axes``), from the start moved by :meth:`_scan_axial`; each candidate keeps the
        best end."""
        sharp = self._second_path(stages)
        if not sharp:
            for stage in stages:
                self._lm_stage(state, stage, tick)
            return
        start, start_cell = state.copy(), state.batch.cell.clone()
        for stage in stages[: len(stages) - len(sharp)]:
            self._lm_stage(state, stage, tick)
        for stage in sharp:
            wss = self._lm_stage(state, stage, tick)
        ends = [(state.copy(), start_cell, wss)]
        state.restore(start, torch.ones(state.n, dtype=torch.bool))
        state.batch = state.batch.replace(cell=start_cell.clone())
        for stage in sharp:
            wss = self._lm_stage(state, stage, tick)
        ends.append((state.copy(), start_cell, wss))
        if axes is not None and any(a is not None for a in axes):
            ends.append(self._axial_path(state, start, start_cell, axes, sharp, tick))
        best = torch.stack([w for _, _, w in ends]).argmin(0)
        state.batch = state.batch.replace(cell=torch.stack([c for _, c, _ in ends])[best, torch.arange(state.n)])
        for j, (saved, _, _) in enumerate(ends):
            state.restore(saved, best == j)

    def _axial_path(
        self,
        state: _State,
        start: dict[str, torch.Tensor],
        start_cell: torch.Tensor,
        axes: Sequence[np.ndarray | None],
        sharp: Sequence[RefinementStage],
        tick,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The third path of :meth:`_early_stages`, as an end in ``state``'s layout ``(values, cell, wss)``: the
        candidates with a unique axis from the start moved by :meth:`_scan_axial`, then the sharp stages. Only
        those candidates are refined (as a state of their own, built from the same starts: ``start`` holds the
        initial values, no stage having run before); the others get an infinite wss, so this end is never theirs
        (most relaxed solve samples have no axis, and running them all again cost a third of the sharp stages)."""
        rows = [i for i, a in enumerate(axes) if a is not None]
        index = torch.tensor(rows)
        structures = state.batch.replace(cell=start_cell).to_structures()
        constraints = None if state.constraints is None else [state.constraints[i] for i in rows]
        texture = self.texture or (0, 0, 1)
        sub = _State([structures[i] for i in rows], self.profile, self.zero_shift, texture, constraints)
        sub.position_free = state.position_free[index].clone()
        self._scan_axial(sub, [axes[i] for i in rows])
        cell = start_cell.clone()
        cell[index] = sub.batch.cell
        wss = torch.full((state.n,), math.inf, dtype=torch.float64)
        for stage in sharp:
            wss[index] = self._lm_stage(sub, stage, tick)
        values = {k: v.clone() for k, v in start.items()}
        for attr in values:
            owner = state._owner_of(attr)
            mask = torch.isin(owner, index)
            if attr == "strain_free":
                values[attr][index, : sub.strain_free.shape[1]] = sub.strain_free
            else:
                values[attr][mask] = getattr(sub, attr)
        return values, cell, wss

    def _results(self, state: _State, groups: Sequence[str], start: torch.Tensor, complete: bool) -> list[Refinement]:
        with torch.no_grad():
            values = state.values()
            batch, _, _ = state.structures_and_instrument(values, 0.0, self.texture is not None)
            fit = self._fit(state, values, 0.0)
        owners = torch.cat([owner for _, _, owner in state.blocks(groups)]) if groups else torch.zeros(0).long()
        n_params = torch.bincount(owners, minlength=state.n) + 1 + self.target.background_order
        out = []
        for i, s in enumerate(batch.to_structures()):
            j = 0 if self.mixture else i
            b_sel = state.b_owner == i
            b_iso = {
                chemical_symbols[int(z)]: float(v) for z, v in zip(state.b_element[b_sel], state.b[b_sel], strict=True)
            }
            u, v, w = (float(t) for t in state.uvw[i])
            out.append(
                Refinement(
                    structure=s.wrapped(),
                    rwp=float(fit.rwp[j]),
                    scale=float(fit.scale[i]),
                    zero_shift=float(state.zero[i]),
                    profile=Profile(u, v, max(w, 1e-4), min(max(float(state.eta[i]), 0.0), 1.0)),
                    b_iso=b_iso,
                    texture_ratio=float(state.po[i]) if self.texture is not None else None,
                    y_calc=fit.y_calc[j].numpy().copy(),
                    background=fit.background[j].numpy().copy(),
                    n_parameters=int(n_params[i]),
                    start_rwp=float(start[j]),
                    complete=complete,
                    space_group=None if state.constraints is None else state.constraints[i].space_group,
                )
            )
        return out
