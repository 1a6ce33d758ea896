"""Periodic voxel fields per species: smeared Gaussian densities, an encoder and a decoder that counts atoms.

Representation
--------------
One channel per species. Channel ``c`` holds, at every point of a periodic grid, the sum over the atoms of
species ``c`` and over all their periodic images of an unnormalised Gaussian of width ``sigma`` (Å)::

    f_c(r) = Σ_atoms Σ_images exp(−|r − r_atom − image|² / (2 σ²))      (truncated at ``truncate·σ``)

so an isolated atom is a peak of height 1 whatever the grid, and the number of atoms of a species is the
integral of its channel divided by the volume of one Gaussian, ``(2π)^{3/2} σ³`` — a continuous quantity
that a diffusion model can change smoothly (grand-canonical generation).

The grid lives on fractional coordinates: voxel ``(i, j, k)`` sits at fractional position
``(i/Nx, j/Ny, k/Nz)``, and distances are Cartesian (``Δfrac @ cell``), so general triclinic cells work
unchanged and a field never depends on how the cell is rotated in space.

Why smeared densities rather than occupancy plus sub-voxel offset channels: offsets are undefined at empty
voxels and jump when an atom crosses a voxel face, and one voxel cannot hold two atoms; a smeared density is
smooth in the atom positions, is zero where there is nothing, turns a translation of the crystal by whole
voxels into a circular shift of the field (the symmetry a circularly padded U-Net has), and makes decoding a
well-posed least-squares problem. Its requirement is resolution: ``sigma`` must be at least half the
spacing of the grid planes (checked), so that the sampled Gaussians are not aliased; ~0.3 Å on a grid of
~0.25 Å keeps atoms 1.3 Å apart as well-separated peaks.

Decoding (:meth:`VoxelGrid.decode`): periodic local maxima above ``peak_threshold`` are candidates, refined
to sub-voxel precision by a parabola through the logarithm of the field along each grid axis (exact for an
isolated Gaussian on an orthogonal grid) and thinned by non-maximum suppression within ``merge_distance``;
then the positions and masses of all candidates are fitted jointly to the field by least squares (L-BFGS
through the same differentiable renderer the encoder uses, so overlapping neighbours do not bias each other),
candidates whose fitted mass is below ``mass_threshold`` are dropped, peaks left in the residual are added,
and the fit is repeated. The atom count is therefore found by the decoder, never given to it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import scipy.ndimage
import scipy.special
import torch
import vesin

from atomdiff.errors import InputError
from atomdiff.structure.elements import atomic_number, chemical_symbols
from atomdiff.structure.structure import Structure

MIN_SIGMA_PER_SPACING = 0.5
"""Smallest allowed ratio of ``sigma`` to the spacing of grid planes (aliasing of a sampled Gaussian is
``exp(−2π²(σ/d)²)``, 0.7 % at the limit)."""


def _as_species(species: Sequence[int | str]) -> tuple[int, ...]:
    if isinstance(species, str | int):
        species = [species]
    out = tuple(atomic_number(s, what="species") for s in species)
    if not out:
        raise InputError("species: at least one element is needed")
    if len(set(out)) != len(out):
        raise InputError(f"species: repeated element in {[chemical_symbols[z] for z in out]}")
    return out


def _as_cell(cell: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(cell, torch.Tensor):
        cell = cell.detach().cpu().numpy()
    cell = np.array(cell, dtype=np.float64)  # a writable copy
    if cell.shape != (3, 3):
        raise InputError(f"cell must have shape (3, 3), got {cell.shape}")
    if not np.all(np.isfinite(cell)) or abs(np.linalg.det(cell)) < 1e-8:
        raise InputError("cell is singular or not finite")
    return cell


@dataclasses.dataclass(frozen=True)
class DetectedAtoms:
    """What the decoder found: atomic numbers, wrapped fractional coordinates and fitted masses (≈ 1 each)."""

    numbers: np.ndarray
    frac: np.ndarray
    masses: np.ndarray


@dataclasses.dataclass(frozen=True)
class VoxelGrid:
    """A periodic grid of ``shape`` voxels spanning the cell, one channel per element of ``species``.

    Attributes:
        species: atomic numbers (or symbols) of the channels, in order.
        shape: ``(Nx, Ny, Nz)`` voxels along the three lattice vectors.
        sigma: Gaussian width in Å.
        truncate: the Gaussians are cut at ``truncate * sigma``.
    """

    species: tuple[int, ...]
    shape: tuple[int, int, int]
    sigma: float = 0.3
    truncate: float = 4.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", _as_species(self.species))
        shape = tuple(int(n) for n in np.atleast_1d(np.asarray(self.shape)))
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"shape must be three positive voxel counts, got {self.shape}")
        object.__setattr__(self, "shape", shape)
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise InputError(f"sigma must be a positive width in Å, got {self.sigma}")
        if not self.truncate >= 2:
            raise InputError(f"truncate must be at least 2 (sigmas), got {self.truncate}")
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "truncate", float(self.truncate))

    @classmethod
    def for_cell(
        cls,
        cell: np.ndarray,
        species: Sequence[int | str],
        spacing: float = 0.25,
        *,
        sigma: float = 0.3,
        truncate: float = 4.5,
        multiple_of: int = 1,
    ) -> VoxelGrid:
        """The grid whose voxels are at most ``spacing`` Å long along each lattice vector of ``cell``; each
        count is rounded up to a multiple of ``multiple_of`` (the downsampling factor of a U-Net)."""
        if not spacing > 0:
            raise InputError(f"spacing must be positive (Å), got {spacing}")
        if multiple_of < 1:
            raise InputError(f"multiple_of must be a positive integer, got {multiple_of}")
        lengths = np.linalg.norm(_as_cell(cell), axis=1)
        counts = np.ceil(lengths / spacing - 1e-9).astype(int)
        shape = tuple(int(multiple_of * math.ceil(n / multiple_of)) for n in counts)
        return cls(_as_species(species), shape, sigma, truncate)

    # --- geometry -------------------------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        return len(self.species)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    def plane_spacing(self, cell: np.ndarray) -> np.ndarray:
        """Distance between neighbouring grid planes along each grid axis, in Å (for a triclinic cell this is
        shorter than the voxel edge)."""
        inv = np.linalg.inv(_as_cell(cell))
        return 1.0 / (np.asarray(self.shape) * np.linalg.norm(inv, axis=0))

    def check_cell(self, cell: np.ndarray) -> np.ndarray:
        """The cell as an array, after checking that the grid resolves Gaussians of width ``sigma`` in it."""
        cell = _as_cell(cell)
        spacing = float(self.plane_spacing(cell).max())
        if self.sigma < MIN_SIGMA_PER_SPACING * spacing:
            raise InputError(
                f"sigma = {self.sigma:g} Å is too narrow for a grid of shape {self.shape} in this cell "
                f"(planes {spacing:.3f} Å apart): use sigma ≥ {MIN_SIGMA_PER_SPACING * spacing:.3f} Å or a finer shape"
            )
        return cell

    def unit_mass(self, cell: np.ndarray) -> float:
        """Sum over the voxels of the field of one atom: the integral of a truncated Gaussian divided by the
        voxel volume."""
        cell = _as_cell(cell)
        volume = abs(float(np.linalg.det(cell)))
        inside = float(scipy.special.gammainc(1.5, 0.5 * self.truncate**2))  # χ² (3 dof) mass within the cut
        return (2 * math.pi) ** 1.5 * self.sigma**3 * inside * self.n_voxels / volume

    # --- encoding -------------------------------------------------------------------------------------
    def render(
        self,
        frac: torch.Tensor,
        channels: torch.Tensor,
        cell: torch.Tensor,
        masses: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The field ``(C, Nx, Ny, Nz)`` of atoms at ``frac`` ``(N, 3)`` in channels ``channels`` ``(N,)``,
        each scaled by ``masses`` (default 1). Differentiable with respect to ``frac``, ``masses`` and ``cell``
        (the stencil of each atom is chosen from its position without gradient)."""
        shape = self.shape
        n = torch.tensor(shape, dtype=torch.long, device=frac.device)
        out = frac.new_zeros(self.n_channels * self.n_voxels)
        if frac.shape[0] == 0:
            return out.view(self.n_channels, *shape)
        radius = self.truncate * self.sigma
        inv = torch.linalg.inv(cell.detach())
        # every grid point within `radius` of an atom is within `half` index steps of its nearest grid point
        half = torch.ceil(radius * n.to(cell.dtype) * torch.linalg.norm(inv, dim=0) + 0.5).long().tolist()
        ranges = [torch.arange(-h, h + 1, device=frac.device) for h in half]
        offsets = torch.stack(torch.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
        # keep the offsets that can reach within `radius` of an atom at most half a voxel from its centre
        voxel = cell.detach() / n.to(cell.dtype)[:, None]
        slack = 0.5 * torch.linalg.norm(voxel, dim=1).sum()
        reach = torch.linalg.norm(offsets.to(cell.dtype) @ voxel, dim=1)
        offsets = offsets[reach < radius + slack]
        centre = torch.round(frac.detach() * n).long()
        idx = centre[:, None, :] + offsets[None, :, :]
        disp = (idx.to(frac.dtype) / n.to(frac.dtype) - frac[:, None, :]) @ cell.to(frac.dtype)
        r2 = (disp * disp).sum(-1)
        w = torch.exp(-r2 / (2 * self.sigma**2))
        if masses is not None:
            w = w * masses[:, None].to(w.dtype)
        w = torch.where(r2 < radius * radius, w, torch.zeros_like(w))
        wrapped = torch.remainder(idx, n)
        flat = ((channels.long()[:, None] * n[0] + wrapped[..., 0]) * n[1] + wrapped[..., 1]) * n[2] + wrapped[..., 2]
        return out.index_add(0, flat.reshape(-1), w.reshape(-1)).view(self.n_channels, *shape)

    def channels_of(self, numbers: np.ndarray) -> np.ndarray:
        """Channel index of each atomic number (``InputError`` for an element that has no channel)."""
        lookup = {z: c for c, z in enumerate(self.species)}
        missing = sorted({int(z) for z in numbers} - set(lookup))
        if missing:
            names = [chemical_symbols[z] for z in missing]
            raise InputError(f"species: the grid has no channel for {names} (channels: {self.symbols})")
        return np.array([lookup[int(z)] for z in numbers], dtype=np.int64)

    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.species]

    def encode(self, structure: Structure, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The ``(C, Nx, Ny, Nz)`` field of a periodic structure."""
        if not all(structure.pbc):
            raise InputError("structure: a voxel field needs periodicity along all three lattice vectors (pbc)")
        cell = self.check_cell(structure.cell)
        channels = torch.as_tensor(self.channels_of(structure.numbers))
        frac = torch.tensor(structure.frac, dtype=torch.float64)
        field = self.render(frac, channels, torch.as_tensor(cell))
        return field.to(dtype)

    def encode_batch(self, structures: Sequence[Structure], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(B, C, Nx, Ny, Nz)`` fields of several structures on this grid (each in its own cell)."""
        if not structures:
            return torch.zeros(0, self.n_channels, *self.shape, dtype=dtype)
        return torch.stack([self.encode(s, dtype) for s in structures])

    def atom_counts(self, field: torch.Tensor, cell: np.ndarray) -> torch.Tensor:
        """Continuous number of atoms per channel: the integral of each channel over one atom's integral;
        ``field`` is ``(..., C, Nx, Ny, Nz)``."""
        return field.sum((-3, -2, -1)) / self.unit_mass(cell)

    # --- decoding -------------------------------------------------------------------------------------
    def _check_field(self, field: torch.Tensor | np.ndarray) -> torch.Tensor:
        field = torch.as_tensor(field).detach().to("cpu", torch.float64)
        if tuple(field.shape) != (self.n_channels, *self.shape):
            raise InputError(f"field must have shape {(self.n_channels, *self.shape)}, got {tuple(field.shape)}")
        if not torch.all(torch.isfinite(field)):
            raise InputError("field has non-finite values")
        return field

    def _peaks(self, field: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Periodic local maxima above ``threshold``: ``(channels, frac, heights)`` with a log-parabola
        sub-voxel estimate along each grid axis."""
        found_c, found_frac, found_h = [], [], []
        shape = np.asarray(self.shape)
        for c in range(self.n_channels):
            f = field[c]
            peak = (f >= scipy.ndimage.maximum_filter(f, size=3, mode="wrap")) & (f > threshold)
            idx = np.argwhere(peak)
            if not len(idx):
                continue
            f0 = f[tuple(idx.T)]
            delta = np.zeros(idx.shape, dtype=np.float64)
            for k in range(3):
                step = np.zeros(3, dtype=np.int64)
                step[k] = 1
                fm = f[tuple(((idx - step) % shape).T)]
                fp = f[tuple(((idx + step) % shape).T)]
                ok = (fm > 1e-12) & (fp > 1e-12)
                lm, l0, lp = (np.log(np.where(ok, v, 1.0)) for v in (fm, f0, fp))
                curvature = lm - 2 * l0 + lp
                ok &= curvature < -1e-12
                delta[:, k] = np.where(ok, 0.5 * (lm - lp) / np.where(ok, curvature, -1.0), 0.0)
            found_c.append(np.full(len(idx), c))
            found_frac.append((idx + np.clip(delta, -0.5, 0.5)) / shape)
            found_h.append(f0)
        if not found_c:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 3)), np.zeros(0)
        return np.concatenate(found_c), np.concatenate(found_frac), np.concatenate(found_h)

    @staticmethod
    def _suppress(
        channels: np.ndarray, frac: np.ndarray, heights: np.ndarray, cell: np.ndarray, distance: float
    ) -> np.ndarray:
        """Indices kept by non-maximum suppression: of candidates of one channel closer than ``distance``, the
        highest survives."""
        order = np.argsort(-heights, kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        if len(frac) < 2 or distance <= 0:
            return order
        calc = vesin.NeighborList(cutoff=float(distance), full_list=True)
        i, j = calc.compute(frac @ cell, cell, True, quantities="ij")
        same = (channels[i] == channels[j]) & (i != j)
        i, j = i[same], j[same]
        beaten = np.zeros(len(frac), dtype=bool)
        for a in order:  # greedy in decreasing height
            if beaten[a]:
                continue
            nb = j[i == a]
            beaten[nb[rank[nb] > rank[a]]] = True
        return order[~beaten[order]]

    def _fit(
        self,
        field: torch.Tensor,
        channels: torch.Tensor,
        frac: torch.Tensor,
        masses: torch.Tensor,
        cell: torch.Tensor,
        max_iter: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Least-squares positions and masses of all atoms against ``field`` (L-BFGS, float64)."""
        if len(channels) == 0:
            return frac, masses
        inv = torch.linalg.inv(cell)
        scale = 1.0 / self.unit_mass(cell.numpy())
        disp = torch.zeros_like(frac, requires_grad=True)  # Cartesian displacement, Å
        mass = masses.clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [disp, mass],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=1e-10,
            tolerance_change=1e-14,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            model = self.render(frac + disp @ inv, channels, cell, mass)
            loss = 0.5 * scale * ((model - field) ** 2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return (frac + disp @ inv).detach(), mass.detach()

    def detect(
        self,
        field: torch.Tensor | np.ndarray,
        cell: np.ndarray,
        *,
        peak_threshold: float = 0.3,
        mass_threshold: float = 0.5,
        merge_distance: float | None = None,
        max_rounds: int = 2,
        max_iter: int = 50,
    ) -> DetectedAtoms:
        """Atoms in a ``(C, Nx, Ny, Nz)`` field (see the module docstring for the method).

        Args:
            peak_threshold: smallest peak height (an isolated atom's peak is 1) that starts a candidate.
            mass_threshold: smallest fitted mass (an atom is 1) that is kept as an atom.
            merge_distance: candidates of one species closer than this (Å) are one; default ``2 * sigma``.
            max_rounds: fit / drop / add-residual-peaks rounds.
            max_iter: L-BFGS iterations per fit (a clean field converges in about 20; the cost of a fit is
                proportional to it and to the number of candidates, large for the noise of an untrained model).
        """
        cell_np = self.check_cell(cell)
        cell_t = torch.as_tensor(cell_np)
        target = self._check_field(field)
        merge = 2 * self.sigma if merge_distance is None else float(merge_distance)
        channels_np, frac_np, heights = self._peaks(target.numpy(), peak_threshold)
        keep = self._suppress(channels_np, frac_np, heights, cell_np, merge)
        channels = torch.as_tensor(channels_np[keep])
        frac = torch.as_tensor(frac_np[keep])
        masses = torch.as_tensor(heights[keep]).clamp(0.5, 2.0)
        for _ in range(max(1, max_rounds)):
            frac, masses = self._fit(target, channels, frac, masses, cell_t, max_iter)
            kept = masses >= mass_threshold
            channels, frac, masses = channels[kept], frac[kept], masses[kept]
            with torch.no_grad():
                residual = target - self.render(frac, channels, cell_t, masses)
            new_c, new_frac, new_h = self._peaks(residual.numpy(), peak_threshold)
            new_keep = self._suppress(new_c, new_frac, new_h, cell_np, merge)
            if bool(kept.all()) and not len(new_keep):
                break
            channels = torch.cat([channels, torch.as_tensor(new_c[new_keep])])
            frac = torch.cat([frac, torch.as_tensor(new_frac[new_keep])])
            masses = torch.cat([masses, torch.as_tensor(new_h[new_keep]).clamp(0.5, 2.0)])
        else:
            frac, masses = self._fit(target, channels, frac, masses, cell_t, max_iter)
            kept = masses >= mass_threshold
            channels, frac, masses = channels[kept], frac[kept], masses[kept]
        frac_out = frac.numpy() % 1.0
        frac_out[frac_out >= 1.0] = 0.0  # -1e-17 % 1 rounds to 1.0
        numbers = np.asarray(self.species, dtype=np.int64)[channels.numpy()]
        return DetectedAtoms(numbers, frac_out, masses.numpy())

    def decode(self, field: torch.Tensor | np.ndarray, cell: np.ndarray, **options) -> Structure:
        """The structure in a ``(C, Nx, Ny, Nz)`` field; the number of atoms is found, not given (possibly
        zero). ``options`` go to :meth:`detect`."""
        cell = self.check_cell(cell)
        found = self.detect(field, cell, **options)
        return Structure(found.numbers, found.frac, cell)

    def decode_batch(self, fields: torch.Tensor, cell: np.ndarray, **options) -> list[Structure]:
        """Structures of ``(B, C, Nx, Ny, Nz)`` fields that share one cell."""
        return [self.decode(f, cell, **options) for f in fields]


def encode(
    structure: Structure,
    species: Sequence[int | str] | None = None,
    shape: tuple[int, int, int] | None = None,
    *,
    spacing: float | None = None,
    sigma: float = 0.3,
    truncate: float = 4.5,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ``(C, Nx, Ny, Nz)`` field of ``structure``: give ``shape`` or ``spacing`` (Å); ``species`` defaults to
    the elements of the structure in increasing atomic number."""
    if species is None:
        species = sorted({int(z) for z in structure.numbers})
        if not species:
            raise InputError("species: an empty structure needs the species given")
    if (shape is None) == (spacing is None):
        raise InputError("give exactly one of shape and spacing")
    if shape is None:
        grid = VoxelGrid.for_cell(structure.cell, species, spacing, sigma=sigma, truncate=truncate)
    else:
        grid = VoxelGrid(_as_species(species), shape, sigma, truncate)
    return grid.encode(structure, dtype)


def decode(
    field: torch.Tensor | np.ndarray,
    cell: np.ndarray,
    species: Sequence[int | str],
    *,
    sigma: float = 0.3,
    truncate: float = 4.5,
    **options,
) -> Structure:
    """The structure in a ``(C, Nx, Ny, Nz)`` field (see :meth:`VoxelGrid.detect` for ``options``)."""
    shape = tuple(torch.as_tensor(field).shape[-3:])
    return VoxelGrid(_as_species(species), shape, sigma, truncate).decode(field, cell, **options)
