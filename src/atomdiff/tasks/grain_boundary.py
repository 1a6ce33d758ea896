"""Grain boundaries by voxel inpainting: the grains stay, the boundary region is generated with a free atom count.

Pipeline (``atomdiff gb``):

1. Bulk reference with the potential (:func:`atomdiff.physics.potentials.bulk_reference`): lattice constant
   ``a0`` and energy per atom ``e_bulk``.
2. Builder boundaries (:func:`atomdiff.structure.grain_boundary.build_bicrystal`, pymatgen's CSL builder) at
   several rigid in-plane shifts of one grain (``ab_shift``), each with pymatgen's merging of close atoms across
   the boundary and with every lattice site kept (:data:`BUILDER_MERGE_RATIOS`), each relaxed; the lowest is the
   bar a generated boundary is measured against (a single unshifted builder boundary would be an easy bar, and
   the two merge settings give different atom counts, whose best differs by shift).
3. Generation: the bicrystal is scaled so that its lattice constant is one the voxel model learned
   (``model_lattice_constant``; the ordered-phase set has bcc at 3.0 and 4.0 Å and fcc at 4.0 and 6.0 Å), its
   cell sized (in-plane repeats, grain thickness) so that every edge is close to a whole number of the model's
   voxel blocks, and encoded into the model's first channel (the one its elemental phases use). The samples
   cycle through the builder's boundaries (every rigid shift and merge ratio; the kept grains fix the shift,
   so a generated boundary can only change what lies within the slabs). With ``start`` = 1 the slabs are
   generated from pure noise; below 1 from that builder boundary's slabs noised to time ``start`` (SDEdit: a
   variation of the builder's boundary, atom count free as well). Voxels farther
   than ``width`` from both boundary planes are known; the slabs around the planes are inpainted
   (:meth:`atomdiff.diffusion.voxel.VoxelDiffusion.inpaint`) and decoded, so the number of atoms in them is
   the model's choice. Builder atoms outside the slabs and decoded atoms inside them make the candidate,
   scaled back to ``a0``.
4. Each candidate is relaxed (positions and the cell length normal to the boundary) and
   ``E_gb = (E − N e_bulk) / (2 A)`` reported (two boundaries per periodic cell), in J/m².
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.physics.potentials import BulkReference, bulk_reference, calculator, relax
from atomdiff.structure.grain_boundary import Bicrystal, build_bicrystal
from atomdiff.structure.structure import Structure

EV_PER_A2_TO_J_PER_M2 = 16.021766339
"""1 eV/Å² in J/m²."""

MODEL_LATTICE_CONSTANTS = {"bcc": (3.0, 4.0), "fcc": (4.0, 6.0)}
"""Lattice constants (Å) of the elemental phases in ``atomdiff data ordered`` (the shipped voxel model's data)."""

BUILDER_MERGE_RATIOS = (0.7, 0.0)
"""Builder boundaries are made with pymatgen's merging of atoms closer than 0.7 bond lengths across the boundary
(its default) and with none (every site of both grains kept)."""

BUILDER_ONLY_EXPAND = 4
"""Grain thickness (CSL periods) of the builder's boundaries when nothing is generated."""

MIN_GRAIN_CORE = 4.0
"""Thickness (Å) of each grain that stays known between the two regenerated slabs."""

Progress = Callable[[str, float, float], None] | None


@dataclasses.dataclass
class GBSettings:
    """What ``atomdiff gb`` does (see the module's docstring)."""

    element: str
    sigma: int
    plane: tuple[int, int, int]
    kind: str = "twist"
    axis: tuple[int, int, int] | None = None
    lattice: str | None = None
    number: int = 16
    steps: int = 100
    resample: int = 1
    start: float = 1.0
    width: float = 3.0
    potential: str = "auto"
    model_lattice_constant: float | None = None
    shifts: int = 3
    seed: int = 0
    fmax: float = 0.02
    relax_steps: int = 2000
    max_atoms: int = 3000

    def bicrystal(self, reference: BulkReference, **options) -> Bicrystal:
        """The builder's bicrystal of this boundary at the potential's lattice constant (``options`` go to
        :func:`~atomdiff.structure.grain_boundary.build_bicrystal`)."""
        return build_bicrystal(
            self.element,
            reference.lattice,
            reference.lattice_constant,
            self.sigma,
            self.plane,
            self.kind,
            self.axis,
            **options,
        )

    def validate(self) -> None:
        if self.number < 1 or self.steps < 1 or self.resample < 1 or self.shifts < 1:
            raise InputError("number, steps, resample and shifts must be at least 1")
        if not 0.0 < self.start <= 1.0:
            raise InputError(f"--start must be in (0, 1], got {self.start}")
        if self.width <= 0:
            raise InputError(f"--width must be positive (Å), got {self.width}")


def gb_energy(energy: float, n_atoms: int, reference: BulkReference, area: float) -> float:
    """``(E − N e_bulk) / (2 A)`` in J/m² (two boundaries per periodic bicrystal)."""
    return (energy - n_atoms * reference.energy_per_atom) / (2.0 * area) * EV_PER_A2_TO_J_PER_M2


def _record(source: str, relaxed, reference: BulkReference, area: float, cells: int, **extra) -> dict[str, Any]:
    """One relaxed boundary; ``cells``: CSL boundary cells in its cross-section (atoms are also given per cell,
    so that boundaries in cells of different size compare)."""
    return {
        "source": source,
        "atoms": len(relaxed.atoms),
        "atoms_per_cell": len(relaxed.atoms) / cells,
        "E_gb_J_m2": round(gb_energy(relaxed.energy, len(relaxed.atoms), reference, area), 5),
        "energy_eV": relaxed.energy,
        "relax_steps": relaxed.steps,
        "converged": relaxed.converged,
        **extra,
    }


def rigid_shifts(settings: GBSettings) -> list[tuple[float, float]]:
    """The ``shifts × shifts`` grid of rigid in-plane shifts (fractions of the boundary cell's edges)."""
    grid = [i / settings.shifts for i in range(settings.shifts)]
    return list(itertools.product(grid, grid))


def builder_boundaries(
    settings: GBSettings, reference: BulkReference, calc, expand_times: int, progress: Progress = None
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Relaxed builder boundaries at every rigid shift and merge ratio; records and relaxed atoms."""
    records, structures = [], []
    jobs = list(itertools.product(BUILDER_MERGE_RATIOS, rigid_shifts(settings)))
    for k, (ratio, shift) in enumerate(jobs):
        bicrystal = settings.bicrystal(reference, expand_times=expand_times, ab_shift=shift, rm_ratio=ratio)
        relaxed = relax(bicrystal.structure.to_ase(), calc, fmax=settings.fmax, steps=settings.relax_steps)
        records.append(_record("builder", relaxed, reference, bicrystal.area, 1, shift=list(shift), rm_ratio=ratio))
        structures.append(relaxed.atoms)
        if progress is not None:
            progress("builder", k + 1, len(jobs))
    return records, structures


def fit_to_grid(
    settings: GBSettings, reference: BulkReference, scale: float, spacing: float, factor: int
) -> tuple[Bicrystal, tuple[int, int, int], int, tuple[int, int]]:
    """The builder bicrystal (with its grid shape, grain thickness and in-plane repeats) whose scaled cell
    edges are closest to whole numbers of ``factor`` voxels of ``spacing`` (Å, the model's voxel size),
    preferring fewer atoms among near fits (≤ 3 % mismatch)."""
    best = None
    block = factor * spacing
    for expand_times in range(1, 9):
        base = settings.bicrystal(reference, expand_times=expand_times)
        height = base.structure.volume / base.area
        if height / 2 - 2 * settings.width < MIN_GRAIN_CORE:
            continue  # the grains must keep a known core between the two regenerated slabs
        lengths = np.linalg.norm(base.structure.cell, axis=1) * scale
        for na, nb in itertools.product(range(1, 6), repeat=2):
            scaled = lengths * np.array([na, nb, 1])
            blocks = np.maximum(np.round(scaled / block), 1)
            mismatch = float(np.max(np.abs(blocks * block / scaled - 1)))
            atoms = len(base.structure) * na * nb
            if atoms > settings.max_atoms:
                continue
            key = (mismatch > 0.03, atoms if mismatch <= 0.03 else mismatch)
            if best is None or key < best[0]:
                best = (key, expand_times, (na, nb), tuple(int(b * factor) for b in blocks))
    if best is None:
        raise InputError(
            f"no bicrystal of at most {settings.max_atoms} atoms fits the voxel grid with grains thicker than "
            f"2 × --width + {MIN_GRAIN_CORE} Å; lower --width"
        )
    _, expand_times, in_plane, shape = best
    bicrystal = settings.bicrystal(reference, expand_times=expand_times, in_plane=in_plane)
    return bicrystal, shape, expand_times, in_plane  # type: ignore[return-value]


def boundary_mask(shape: Sequence[int], planes: Sequence[float], height: float, width: float) -> torch.Tensor:
    """``shape`` mask, 1 where a voxel is farther than ``width`` (Å) from both boundary planes (fractional third
    coordinate ``planes`` of a cell of ``height`` Å)."""
    c = torch.arange(shape[2], dtype=torch.float64) / shape[2]
    d = torch.stack([torch.abs((c - p + 0.5) % 1.0 - 0.5) for p in planes]).min(dim=0).values * height
    known = (d > width).to(torch.float32)
    return known[None, None, :].expand(*shape).contiguous()


def assemble(bicrystal: Bicrystal, decoded: Structure, width: float, min_separation: float) -> Structure:
    """Builder atoms outside the boundary slabs + decoded atoms inside them (dropping decoded atoms closer than
    ``min_separation`` to a kept grain atom), with the bicrystal's cell and element."""
    height = bicrystal.structure.volume / bicrystal.area
    keep = bicrystal.distance_to_boundary() > width
    grain_frac = np.asarray(bicrystal.structure.frac)[keep] % 1.0
    c = np.asarray(decoded.frac)[:, 2] % 1.0
    d = np.min([np.abs((c - p + 0.5) % 1.0 - 0.5) for p in bicrystal.planes], axis=0) * height
    new_frac = np.asarray(decoded.frac)[d <= width] % 1.0
    if len(new_frac) and len(grain_frac):
        delta = new_frac[:, None, :] - grain_frac[None, :, :]
        delta -= np.round(delta)
        dist = np.linalg.norm(delta @ bicrystal.structure.cell, axis=-1).min(axis=1)
        new_frac = new_frac[dist >= min_separation]
    frac = np.concatenate([grain_frac, new_frac])
    z = int(bicrystal.structure.numbers[0])
    return Structure(np.full(len(frac), z), frac, bicrystal.structure.cell)


def generate_boundaries(
    model,
    settings: GBSettings,
    reference: BulkReference,
    progress: Progress = None,
    chunk: int = 4,
) -> tuple[Bicrystal, list[Structure], dict[str, Any]]:
    """Inpainted candidates (unrelaxed, at ``a0``) and what was done to make them."""
    if model.cell is None:
        raise InputError("the voxel model has no box, so its voxel size is unknown")
    spacing = float(np.max(np.linalg.norm(model.cell, axis=1) / np.asarray(model.grid.shape)))
    choices = MODEL_LATTICE_CONSTANTS.get(reference.lattice, ())
    a_model = settings.model_lattice_constant or (
        min(choices, key=lambda a: abs(math.log(a / reference.lattice_constant))) if choices else None
    )
    if a_model is None:
        raise InputError(f"give --model-lattice-constant: the model's lattice constant for {reference.lattice}")
    scale = a_model / reference.lattice_constant
    bicrystal, shape, expand_times, in_plane = fit_to_grid(settings, reference, scale, spacing, model.net.factor)
    scaled_cell = bicrystal.structure.cell * scale
    grid = dataclasses.replace(model.grid, shape=shape)
    height = float(bicrystal.structure.volume / bicrystal.area) * scale
    mask = boundary_mask(shape, bicrystal.planes, height, settings.width * scale)
    mask = mask[None].expand(grid.n_channels, *shape).clone()
    mask[1:] = 1.0  # other channels stay empty: an elemental boundary
    nearest = reference.lattice_constant * (math.sqrt(3) / 2 if reference.lattice == "bcc" else math.sqrt(0.5))
    starts = list(itertools.product(rigid_shifts(settings), BUILDER_MERGE_RATIOS))
    generator = torch.Generator().manual_seed(settings.seed)
    candidates: list[Structure | None] = [None] * settings.number
    done = 0
    for s, (shift, ratio) in enumerate(starts):
        indices = list(range(s, settings.number, len(starts)))  # sample k starts from builder k mod len(starts)
        if not indices:
            continue
        grains = settings.bicrystal(
            reference, expand_times=expand_times, in_plane=in_plane, ab_shift=shift, rm_ratio=ratio
        )
        scaled = Structure(np.full(len(grains.structure), grid.species[0]), grains.structure.frac, scaled_cell)
        known = grid.encode(scaled)
        for start in range(0, len(indices), chunk):
            batch = indices[start : start + chunk]

            def tick(step: int, total: int, k: int = len(batch), done: int = done) -> None:
                if progress is not None:
                    progress("inpainting", done * total + step * k, settings.number * total)

            fields = model.inpaint(
                known, mask, len(batch), settings.steps, generator, tick, settings.resample, start=settings.start
            )
            for index, field in zip(batch, fields.cpu(), strict=True):
                decoded = grid.decode(field, scaled_cell)
                decoded = Structure(decoded.numbers, decoded.frac, grains.structure.cell)
                candidate = assemble(grains, decoded, settings.width, 0.6 * nearest)
                candidate.info.update(shift=list(shift), rm_ratio=ratio)
                candidates[index] = candidate
            done += len(batch)
    info = {
        "model_lattice_constant": a_model,
        "scale": scale,
        "grid": list(shape),
        "voxel_size": [float(x) for x in np.linalg.norm(scaled_cell, axis=1) / np.asarray(shape)],
        "bicrystal_atoms": len(bicrystal.structure),
        "expand_times": expand_times,
        "in_plane": list(in_plane),
        "area_A2": bicrystal.area,
    }
    return bicrystal, candidates, info  # type: ignore[return-value]


def run_gb(
    settings: GBSettings, model, progress: Progress = None
) -> tuple[dict[str, Any], list[Any], list[Any], list[Structure]]:
    """The whole pipeline; returns the JSON-ready summary, relaxed builder and generated atoms, and the
    unrelaxed generated candidates. With ``model=None`` only the builder's boundaries are made (grains of
    ``BUILDER_ONLY_EXPAND`` CSL periods)."""
    settings.validate()
    reference = bulk_reference(settings.element, settings.lattice, settings.potential)
    calc = calculator(settings.element, settings.potential)
    if model is None:
        bicrystal = settings.bicrystal(reference, expand_times=BUILDER_ONLY_EXPAND)
        candidates: list[Structure] = []
        info: dict[str, Any] = {"expand_times": BUILDER_ONLY_EXPAND, "area_A2": bicrystal.area}
    else:
        bicrystal, candidates, info = generate_boundaries(model, settings, reference, progress)
    builder_records, builder_atoms = builder_boundaries(settings, reference, calc, info["expand_times"], progress)
    records, relaxed_atoms = [], []
    for k, candidate in enumerate(candidates):
        relaxed = relax(candidate.to_ase(), calc, fmax=settings.fmax, steps=settings.relax_steps)
        cells = int(np.prod(info.get("in_plane", (1, 1))))
        origin = {key: candidate.info[key] for key in ("shift", "rm_ratio") if key in candidate.info}
        records.append(_record("generated", relaxed, reference, bicrystal.area, cells, index=k, **origin))
        relaxed_atoms.append(relaxed.atoms)
        if progress is not None:
            progress("relaxing", k + 1, len(candidates))
    best_builder = min(r["E_gb_J_m2"] for r in builder_records)
    energies = [r["E_gb_J_m2"] for r in records]
    summary = {
        "settings": dataclasses.asdict(settings),
        "bulk": dataclasses.asdict(reference),
        "boundary": {
            "sigma": bicrystal.sigma,
            "axis": list(bicrystal.axis),
            "angle_deg": bicrystal.angle,
            "plane": list(bicrystal.plane),
            "kind": bicrystal.kind,
        },
        "generation": info,
        "builder": builder_records,
        "generated": records,
        "best_builder_E_gb": best_builder,
        "best_builder_E_gb_by_rm_ratio": {
            str(ratio): min(r["E_gb_J_m2"] for r in builder_records if r["rm_ratio"] == ratio)
            for ratio in BUILDER_MERGE_RATIOS
        },
        "best_generated_E_gb": min(energies) if energies else None,
        "generated_at_or_below_builder": sum(e <= best_builder + 1e-4 for e in energies),
    }
    return summary, builder_atoms, relaxed_atoms, candidates
