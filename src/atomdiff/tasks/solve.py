"""Solve a powder pattern: generate candidate structures for the stated chemistry, steer them by the
pattern, relax them with a universal interatomic potential, refine each against the pattern (Rietveld), remove
impossible ones and rank by Rwp.

The steps (:meth:`Solver.run`):

1. generate candidates with the diffusion model, conditioned on the pattern and guided by it;
2. refine each as sampled (:class:`~atomdiff.refine.RietveldRefiner`);
3. relax each with CHGNet (positions and cell) and refine those it moved again, each sample keeping the better
   of its two refinements (:meth:`Solver.refine_and_relax`): a sample whose cation ordering is right but whose
   atoms are 0.1–0.3 Å off stays in a wrong least-squares minimum (measured on the bundled kesterite pattern: a
   kesterite sample refined to Rwp 12.0 % as sampled, 6.2 % relaxed; the true structure gives 6.2 %);
4. a second pass in the cells the pattern has shown: more candidates generated with the lattice held at the
   cell found by indexing the pattern's peaks (:mod:`atomdiff.physics.indexing`, filled with the composition of
   the best first-pass candidate at its volume per atom) and at the refined cells of the best first-pass
   candidates (Bravais symmetry made exact, same cell contents), and refined from the held cell (sharp stages
   only). A
   first-pass candidate with the right cell but the wrong arrangement (kesterite's stannite ordering) thus
   becomes the start of the right one, and samples whose cells came out 5–10 % off (which relaxation and
   refinement do not repair) are redrawn in the measured cell (as sampled, then relaxed at fixed cell);
   Optionally (``restarts``), the best distinct candidates are then re-noised part-way and denoised again in
   their cells under the same guidance (:meth:`Solver.restart`);
5. rank by Rwp, removing duplicates and physically impossible structures; the other orderings of the written
   candidates' species that the radiation hardly tells apart (Cu/Zn for X-rays) are refined and ranked with
   them (:meth:`Solver.with_orderings`); the written candidates are refined
   again in the most symmetric space group the fit allows (:meth:`Solver.symmetrise`, coordinates free as the
   group allows) and compared by ΔAIC when the weights are counts (:func:`compare_candidates`).

Steps 3 and 4 are skipped once a candidate fits the pattern to its counting noise (Rwp ≤ ``stop_gof`` × Rexp,
:meth:`Solver.fits_to_noise`): then no candidate can fit measurably better.

Output folder (written as results become available, each file atomically, so an interrupted run keeps
what it had written):

- ``generated.extxyz``: every raw candidate as sampled (written first; the second pass's are appended);
- ``relaxed.extxyz``: the start of each candidate's kept refinement (as sampled or relaxed; symmetry made exact);
- ``indexing.csv``: the cells found by indexing the pattern, best first (when any index; the report says which
  the second pass held);
- ``01_<formula>_<space group>.cif`` … the ranked, distinct, refined candidates (symmetrised CIF with the
  space group; name order is rank order);
- ``candidates.csv``: rank, formula, space group, Rwp, number of parameters, ΔAIC, lattice, shortest distance,
  file, sample, origin (sampled or reordered) (all refined candidates; rejected ones have an empty rank and the
  reason);
- ``01_fit.png`` …: observed, calculated and difference curves with reflection ticks;
- ``report.html``: the fits, an interactive 3D view of each structure (works offline) and the table;
- ``summary.json``: the settings, Rexp, the steps skipped and the wall time of each stage (written last).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from atomdiff.data.patterns import MeasuredPattern
from atomdiff.diffusion.constraints import CompositionConstraint
from atomdiff.diffusion.crystal import DEFAULT_CFG_SCALE, CrystalDiffusion
from atomdiff.diffusion.guidance import PhysicsGuidance
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.descriptors import min_distance
from atomdiff.physics.diffraction import PowderDiffractionModel, peak_table
from atomdiff.physics.indexing import IndexedCell, index_pattern, same_lattice
from atomdiff.physics.potentials import CELL_FILTERS
from atomdiff.physics.profile import Profile
from atomdiff.physics.target import PatternTarget
from atomdiff.refine import DEFAULT_STAGES, Refinement, RefinementStage, RietveldRefiner
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import chemical_symbols
from atomdiff.structure.io import write_structures
from atomdiff.structure.structure import Structure, hill_formula
from atomdiff.tasks.generate import chunk_seed

LATTICE_COLUMNS = ("a", "b", "c", "alpha", "beta", "gamma")
CANDIDATE_COLUMNS = (
    "rank",
    "formula",
    "space_group",
    "rwp",
    "n_parameters",
    "delta_aic",
    *LATTICE_COLUMNS,
    "volume",
    "density",
    "min_distance",
    "zero_shift",
    "texture_ratio",
    "file",
    "sample",
    "origin",
    "rejected",
)
MIN_POINTS = 50
MIN_DISTANCE = 0.5  # Å: closer atoms make a structure physically impossible
#: spglib tolerances (Å) at which written candidates are symmetrised; the refit decides which version is kept
SYMMETRY_TOLERANCES = (0.05, 0.1, 0.2, 0.3, 0.45, 0.6)

Progress = Callable[[str, float, float], None]


@dataclasses.dataclass
class SolveSettings:
    """How to solve. ``guidance=0`` switches physics guidance off; ``refine_keep`` candidates (best after the
    lattice stages) get the full refinement of positions and displacement parameters."""

    candidates: int = 20
    top: int = 5
    steps: int = 100
    """Denoising steps per sample (session 19: kesterite first for 5 of seeds 0–5 at 100 steps, each under 2
    minutes; perov-5's first 12 patterns 11/12, where 200 steps also finds the twelfth, at twice the generation
    time)."""
    sampler: str = "pc"
    guidance: float = 0.5
    refine_keep: int = 8
    seed: int = 0
    profile: Profile = dataclasses.field(default_factory=lambda: Profile(u=0.0, v=0.0, w=0.01, eta=0.5, cutoff=20.0))
    background_order: int = 6
    symprec: float = 0.1
    stages: tuple[RefinementStage, ...] = DEFAULT_STAGES
    texture: tuple[float, float, float] | None = None
    """Refine a March–Dollase preferred-orientation ratio along this direction (hkl) in the last stage."""
    condition: bool = True
    """Condition a pattern-conditioned model on the measured pattern (ignored by an unconditioned model)."""
    cfg: float = DEFAULT_CFG_SCALE
    """Classifier-free guidance scale of that conditioning."""
    idealise_symprec: float = 0.1
    """Samples are refined from their symmetry within this tolerance (Å) made exact (0: as sampled)."""
    refine_in_group: bool = False
    """Refine each (idealised) sample in its space group (:mod:`atomdiff.refine.symmetry`) instead of in P1."""
    free_fraction: float = 0.25
    """With an element list only: share of the candidates whose species are sampled freely; the others predict
    structures for the model's training cell contents with those elements (:meth:`Solver.composition_groups`)."""
    relax_steps: int = 100
    """Samples are relaxed with the CHGNet universal potential for at most this many FIRE steps before they
    are refined (positions and cell; positions only in held cells); 0: refined as sampled."""
    relax_fmax: float = 0.05
    """Force (eV/Å) at which a relaxation has converged."""
    relax_filter: str = "unit"
    """ASE cell filter of the relaxation (:data:`~atomdiff.physics.potentials.CELL_FILTERS`): UnitCellFilter
    relaxed the 20 kesterite samples 15–30 % faster than FrechetCellFilter, and the solve found the same
    structure (the cells change by a few per cent, where the two parameterisations hardly differ)."""
    cell_pass: int = 16
    """Candidates of the second pass, sampled in the refined cells of the best first-pass candidates (0: none)."""
    cell_pass_cells: int = 2
    """How many distinct refined cells (best first) the second pass holds."""
    index_cells: int = 1
    """The second pass also holds up to this many cells found by indexing the pattern's peaks (0: no indexing):
    the best-ranked ones that the candidates' composition can fill (:meth:`Solver.held_cells`)."""
    index_contents: int = 2
    """Each indexed cell filled by the statistics (``held_contents``) is held with up to this many cell contents,
    the likeliest for its volume first (:meth:`Solver.indexed_contents`)."""
    held_contents: str = "statistics"
    """How an indexed cell is filled (:meth:`Solver.held_cells`): "statistics" (the likeliest contents for its
    volume from the training cells, :meth:`Solver.indexed_contents`) or "candidates" (the formula unit of the best
    refined candidate at its volume per atom, the rule before session 33)."""
    stop_gof: float = 1.05
    """Relaxation and the second pass are skipped once a candidate's Rwp is within this factor of the expected
    R factor of the pattern's counting noise (:meth:`Solver.fits_to_noise`; 0: never skipped)."""
    ordering_tolerance: float = 0.05
    """The written candidates are also refined with the other orderings (:meth:`Solver.with_orderings`) of the
    species whose scattering powers differ by at most this fraction (X-rays: Cu/Zn, 3.4 %; 0: none)."""
    orderings: int = 4
    """At most this many other orderings per written candidate (fewest atoms changed first)."""
    ordering_window: float = 1.5
    """Only written candidates with Rwp within this factor of the best are reordered: exchanging species that
    scatter alike changes the calculated pattern little, so a candidate far behind cannot overtake by it."""
    cell_guidance: float | None = 3.0
    """Physics-guidance strength of the second pass (lattice held at a measured cell); ``None``: ``guidance``.
    With the lattice held the pattern's gradient points each atom to its place, and a stronger pull pays: on
    carbon-24 patterns the second pass's best samples came out at normalised RMS 0.02–0.04 from the truth at 3,
    0.12 at 0.5 (session 31); the bundled kesterite pattern was solved for seeds 0–5 at 3 (session 32)."""
    restarts: int = 0
    """Restart pass after the second: this many samples re-noised from the best distinct candidates' refined
    structures (to ``restart_level``) and denoised again in their cells under the second pass's guidance
    (:meth:`Solver.restart`; 0: none)."""
    restart_from: int = 4
    """How many of the best distinct candidates the restarts start from (shared out evenly)."""
    restart_level: float = 0.3
    """Noise level (diffusion time, 0–1) a restart starts from; its steps are this share of ``steps``."""
    index_share: float | None = 0.75
    """Share of the second pass's samples drawn in the held indexed cells, the rest in the refined cells
    (:meth:`Solver.cell_shares`); ``None``: every held cell gets the same number. 12 of 16 samples in the
    indexed cell instead of 6 solved 36 of the first 100 carbon-24 patterns instead of 28 (none lost), at the
    same cost; kesterite was still solved for seeds 0–5 (session 32)."""


@dataclasses.dataclass
class Candidate:
    """One refined candidate; ``sample`` is the structure its refinement started from (relaxed, symmetrised),
    ``index`` its row in ``generated.extxyz``."""

    index: int
    sample: Structure
    refinement: Refinement
    min_distance: float
    rejected: str = ""
    rank: int | None = None
    space_group: str = ""
    file: str = ""
    duplicate_of: Candidate | None = None
    """The better-ranked candidate this one is the same structure as (then ``rejected`` says so)."""
    delta_aic: float | None = None
    """Akaike information criterion relative to rank 1 (written candidates, on patterns whose weights are counts
    or given uncertainties; :meth:`Solver.compare`)."""
    origin: str = "sample"
    """``"sample"``, or the species reordered and the sample whose candidate was reordered, e.g.
    ``"Cu/Zn ordering of sample 12"`` (:meth:`Solver.with_orderings`)."""


def build_target(
    pattern: MeasuredPattern,
    radiation: str,
    wavelength: str | float,
    profile: Profile,
    background_order: int = 6,
) -> PatternTarget:
    """The pattern with its forward model, after checks a pattern must pass to be solvable."""
    if pattern.axis not in ("two_theta", "q"):
        raise InputError(f"a powder pattern must be on a 2θ or Q axis, not {pattern.axis!r}", path=pattern.source)
    if len(pattern.x) < MIN_POINTS:
        raise InputError(
            f"the pattern has {len(pattern.x)} points; at least {MIN_POINTS} are needed to refine a structure",
            path=pattern.source,
        )
    if not np.any(pattern.y > 0):
        raise InputError("the pattern has no positive intensity", path=pattern.source)
    model = PowderDiffractionModel(radiation, wavelength, torch.as_tensor(pattern.x), pattern.axis, profile=profile)
    sigma = None if pattern.sigma is None else torch.as_tensor(pattern.sigma)
    weights = None if sigma is None else 1.0 / sigma.clamp_min(1e-12) ** 2
    return PatternTarget(model, torch.as_tensor(pattern.y, dtype=torch.float64), weights, background_order)


def largest_remainder(total: int, weights: Sequence[float] | np.ndarray) -> list[int]:
    """``total`` split into integers in proportion to ``weights`` (Hamilton's largest-remainder method; ties to
    the earlier entry), so that equal weights share out evenly, the earlier entries taking the extra ones."""
    w = np.asarray(weights, dtype=float)
    if total < 0 or len(w) == 0 or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"cannot share {total} by weights {w.tolist()}")
    exact = total * w / w.sum()
    shares = np.floor(exact).astype(int)
    order = sorted(range(len(w)), key=lambda k: (-(exact[k] - shares[k]), k))
    for k in order[: total - int(shares.sum())]:
        shares[k] += 1
    return shares.tolist()


def symmetry_of(structure: Structure, symprec: float) -> tuple[str, Structure]:
    """Space group symbol (number) and the symmetrised primitive cell (spglib through pymatgen)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        sga = SpacegroupAnalyzer(structure.to_pymatgen(), symprec=symprec)
        refined = sga.get_primitive_standard_structure()
        return f"{sga.get_space_group_symbol()} ({sga.get_space_group_number()})", Structure.from_pymatgen(refined)
    except Exception:  # spglib gives up on some distorted cells: keep P1
        return "P1 (1)", structure


def lattice_with_its_symmetry(cell: np.ndarray, symprec: float = 0.05) -> np.ndarray:
    """The lattice of ``cell`` with the symmetry it has within ``symprec`` (Å) made exact (spglib on the bare
    lattice, one point per cell; same volume, spglib's standard orientation). A refined P1 cell is a few
    hundredths of a degree off its Bravais symmetry; atoms placed in it cannot be symmetric, so a sample held
    there is refined in P1 without the axial grid (a kesterite sample held in such a cell ended at Rwp 38 %)."""
    import spglib

    cell = np.asarray(cell, dtype=float)
    try:
        lattice = spglib.standardize_cell((cell, [[0.0, 0.0, 0.0]], [1]), to_primitive=True, symprec=symprec)[0]
    except Exception:  # spglib gives up on some cells: keep it as it is
        return cell
    if abs(abs(np.linalg.det(lattice)) - abs(np.linalg.det(cell))) > 1e-4 * abs(np.linalg.det(cell)):
        return cell
    return np.asarray(lattice, dtype=float)


def cell_contents_for(structure: Structure, volume: float, tolerance: float = 0.15) -> np.ndarray | None:
    """Atomic numbers filling a cell of ``volume`` Å³ with ``structure``'s formula unit at its volume per atom
    (the multiple of the formula unit whose volume is nearest; ``None`` when none is within ``tolerance``)."""
    from pymatgen.core import Composition

    composition = Composition(structure.to_pymatgen().composition)
    unit, _ = composition.get_reduced_composition_and_factor()
    per_atom = structure.volume / len(structure)
    k = round(volume / (per_atom * unit.num_atoms))
    if k < 1 or abs(k * unit.num_atoms * per_atom / volume - 1) > tolerance:
        return None
    return np.concatenate([np.full(int(round(n * k)), el.Z) for el, n in unit.items()])


def symmetrised_cif(structure: Structure, symprec: float) -> str:
    from pymatgen.io.cif import CifWriter

    try:
        return str(CifWriter(structure.to_pymatgen(), symprec=symprec))
    except Exception:
        return str(CifWriter(structure.to_pymatgen()))


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-")


MAX_VOLUME_Z = 3.0
"""An indexed cell is not filled with a content whose ln(V / N) is further than this many standard deviations from
the training cells' mean (:meth:`Solver.indexed_contents`)."""


class Solver:
    """Generate → guide → refine → rank for one pattern."""

    def __init__(
        self,
        model: CrystalDiffusion,
        target: PatternTarget,
        constraint: CompositionConstraint,
        settings: SolveSettings | None = None,
    ):
        self.model = model
        self.target = target
        self.constraint = constraint
        self.settings = settings or SolveSettings()
        s = self.settings
        if s.candidates < 1 or s.top < 1 or s.refine_keep < 1:
            raise InputError("--candidates, --top and --refine-keep must be positive")
        if s.guidance < 0:
            raise InputError(f"--guidance must be ≥ 0, got {s.guidance}")
        if s.cell_guidance is not None and s.cell_guidance < 0:
            raise InputError(f"--cell-guidance must be ≥ 0, got {s.cell_guidance}")
        if s.restarts < 0 or s.restart_from < 1 or not 0 < s.restart_level <= 1:
            raise InputError(
                f"--restarts must be ≥ 0 (got {s.restarts}), --restart-level within (0, 1] (got {s.restart_level}) "
                f"and restart_from ≥ 1 (got {s.restart_from})"
            )
        if s.held_contents not in ("statistics", "candidates"):
            raise InputError(f"--held-contents must be statistics or candidates, got {s.held_contents!r}")
        if s.index_share is not None and not 0 <= s.index_share <= 1:
            raise InputError(f"--index-share must be within 0–1, got {s.index_share}")
        if not 0 <= s.free_fraction <= 1:
            raise InputError(f"--free-fraction must be within 0–1, got {s.free_fraction}")
        if s.relax_filter not in CELL_FILTERS:
            raise InputError(f"--relax-filter must be one of {', '.join(CELL_FILTERS)}, got {s.relax_filter!r}")
        if s.relax_steps < 0 or s.cell_pass < 0 or s.cell_pass_cells < 1:
            raise InputError("--relax-steps and --cell-pass must be ≥ 0 and the number of held cells ≥ 1")
        if s.index_cells < 0 or s.index_contents < 1:
            raise InputError(
                f"--index-cells must be ≥ 0 (got {s.index_cells}) and --index-contents ≥ 1 (got {s.index_contents})"
            )
        if s.stop_gof < 0:
            raise InputError(f"--stop-gof must be ≥ 0, got {s.stop_gof}")
        self._calculator = None
        self.skipped: list[str] = []
        """Steps :meth:`run` skipped because a candidate already fitted to the counting noise."""
        self._indexed: list[IndexedCell] | None = None
        self.held_indexed: list[IndexedCell] = []
        """The indexed cells the second pass held (:meth:`held_cells`; one entry per content held in it)."""
        self.held: list[tuple[np.ndarray, np.ndarray]] = []
        """``(numbers, cell)`` of every cell the second pass held, the indexed ones first (:meth:`held_cells`)."""
        self.held_weights: list[float] = []
        """The share of its cell's samples that each entry of ``held_indexed`` gets."""

    def indexed_cells(self) -> list[IndexedCell]:
        """The lattices found by indexing the measured pattern's peaks (:mod:`atomdiff.physics.indexing`, best
        first); none when the pattern has too few peaks to index, none index, or ``index_cells`` is 0."""
        if self._indexed is None:
            self._indexed = []
            if self.settings.index_cells > 0:
                model = self.target.model
                sigma = (1.0 / self.target.weights.clamp_min(1e-300).sqrt()).cpu().numpy()
                x, y = model.x.cpu().numpy(), self.target.y_obs.cpu().numpy()
                try:
                    _, cells = index_pattern(x, y, model.axis, model.wavelength, sigma)
                    self._indexed = cells
                except InputError:  # too few peaks
                    self._indexed = []
        return self._indexed

    def run(
        self, progress: Progress | None = None, on_samples: Callable[[list[Structure]], None] | None = None
    ) -> list[Candidate]:
        """Generate, refine, relax and refine again, then the second pass in the refined cells (see the module's
        docstring); each step after the first refinement is skipped once a candidate fits the pattern to its
        counting noise (:meth:`fits_to_noise`). ``on_samples`` is called with all raw samples so far after each
        generation."""
        s = self.settings
        samples = self.generate(progress)
        if on_samples is not None:
            on_samples(samples)
        self.check_reflections(samples)
        candidates = self.refine_and_relax(samples, progress)
        if s.cell_pass and self.fits_to_noise(candidates):
            self.skipped.append("second pass")
        elif s.cell_pass:
            held = self.generate_in_cells(candidates, progress)
            if held:
                if on_samples is not None:
                    on_samples(samples + held)
                candidates += self.refine_and_relax(held, progress, len(samples), hold_cell=True, where=" in cells")
                samples = samples + held
        if s.restarts and candidates and self.fits_to_noise(candidates):
            self.skipped.append("restarts")
        elif s.restarts and candidates:
            again = self.restart(candidates, progress)
            if again:
                if on_samples is not None:
                    on_samples(samples + again)
                candidates += self.refine_and_relax(again, progress, len(samples), hold_cell=True, where=" restarted")
        return candidates

    def fits_to_noise(self, candidates: Sequence[Candidate]) -> bool:
        """True when an allowed, fully refined candidate has Rwp ≤ ``stop_gof`` × Rexp: it leaves only what
        counting noise leaves, so more candidates cannot fit measurably better. Never with ``stop_gof`` 0 or
        without meaningful weights (:meth:`PatternTarget.expected_rwp`); on measured data systematic profile
        errors usually keep Rwp/Rexp above 1.5, and every step runs."""
        rexp = self.target.expected_rwp()
        if self.settings.stop_gof <= 0 or rexp is None:
            return False
        fitted = [c.refinement.rwp for c in candidates if not c.rejected and c.refinement.complete]
        return bool(fitted) and min(fitted) <= self.settings.stop_gof * rexp

    def refine_and_relax(
        self,
        samples: Sequence[Structure],
        progress: Progress | None = None,
        first: int = 0,
        hold_cell: bool = False,
        where: str = "",
    ) -> list[Candidate]:
        """Refine each sample as sampled; unless one then fits to the noise, relax them all (cell held with
        ``hold_cell``), refine those the relaxation moved, and let each sample keep the better of its two
        refinements (allowed and fully refined first, then Rwp). Candidate ``first + k`` is sample ``k``.
        Both are needed: relaxation brings a real material's sample into the right minimum (kesterite: 12.0 %
        as sampled, 6.2 % relaxed), but it moves a structure the potential finds unstable far from it (on the
        hypothetical perov-5 compounds every relaxed sample refined to 5–7× Rexp, as sampled ≈ 1×)."""
        out = self.refine(samples, progress, stage="refine" + where, cell_known=hold_cell)
        if self.settings.relax_steps and self.fits_to_noise(out):
            self.skipped.append("relaxation" + where)
        elif self.settings.relax_steps:
            relaxed = self.relax(samples, hold_cell=hold_cell, progress=progress, stage="relax" + where)
            moved = [k for k, (a, b) in enumerate(zip(samples, relaxed, strict=True)) if a is not b]
            if moved:
                results = self.refine(
                    [relaxed[k] for k in moved], progress, stage="refine relaxed" + where, cell_known=hold_cell
                )
                for k, other in zip(moved, results, strict=True):
                    if _preference(other) < _preference(out[k]):
                        out[k] = other
        for k, c in enumerate(out):
            c.index = first + k
        return out

    def composition_groups(self) -> list[tuple[CompositionConstraint, int]]:
        """How the candidates are shared out: ``(constraint, number of candidates)``.

        With a formula, all under the user's constraint. With an element list only, the species diffusion alone
        rarely lands on the right composition (it spreads the probability of excluded elements over the allowed
        ones), so ``1 − free_fraction`` of the candidates are structure predictions for the cell contents of the
        model's training cells that satisfy the constraint (:meth:`CompositionConstraint.cell_proposals`, shared
        out by :meth:`proposal_weights`) and the rest sample species freely under the constraint, so that a
        composition the model never saw can still come up."""
        s = self.settings
        proposals = self.constraint.cell_proposals(self.model.stats.cells)
        if not proposals:
            return [(self.constraint, s.candidates)]
        free = round(s.free_fraction * s.candidates)
        shares = largest_remainder(s.candidates - free, self.proposal_weights(proposals))
        groups = [
            (dataclasses.replace(self.constraint, formula=content, atoms=None), n)
            for content, n in zip(proposals, shares, strict=True)
        ]
        groups.append((self.constraint, free))
        return [(c, n) for c, n in groups if n > 0]

    def proposal_weights(self, proposals: Sequence[dict[int, int]]) -> np.ndarray:
        """Relative share of the candidates for each proposed cell content: even without an indexed cell;
        with one, the likelihood that the content's N atoms fill the indexed primitive cell's volume V, from the
        training cells' volume per atom (normal in ln(V / N), :meth:`DataStatistics.log_volume_per_atom`).

        The indexed cell tells how many formula units a primitive cell holds: kesterite's pattern indexes to a
        160 Å³ primitive cell, which 8 atoms fill at 20 Å³ each and 16 at an implausible 10 (the chalcogenide
        training cells average 23.5 Å³ per atom, spread ×1.44), so most candidates go to the 8-atom
        Cu2ZnSnS4 cell rather than half to the 16-atom one. The weights are soft (a cell the indexing missed,
        such as a weak superstructure's, keeps a share when its likelihood is not negligible), and the candidates
        with free species still cover any size."""
        even = np.ones(len(proposals))
        cells = self.indexed_cells()
        if not cells:
            return even
        volume = abs(float(np.linalg.det(cells[0].primitive)))
        mean, spread = self.model.stats.log_volume_per_atom()
        z = np.array([(math.log(volume / sum(p.values())) - mean) / spread for p in proposals])
        return np.exp(-0.5 * (z**2 - (z**2).min()))  # relative, so that far-off cells cannot all underflow

    def generate(self, progress: Progress | None = None) -> list[Structure]:
        s = self.settings
        guidance = PhysicsGuidance(self.target, s.guidance) if s.guidance > 0 else None
        groups = self.composition_groups()
        condition = self.pattern_condition() if s.condition and self.model.conditioned else None
        out: list[Structure] = []
        for g, (constraint, n) in enumerate(groups):

            def tick(step: int, total: int, done: int = g) -> None:
                if progress is not None:
                    progress("generate", done * total + step, len(groups) * total)

            out += self.model.sample(
                n,
                constraint,
                steps=s.steps,
                sampler=s.sampler,
                seed=chunk_seed(s.seed, g),
                guidance=guidance,
                progress=tick,
                condition=None if condition is None else condition.expand(n, -1),
                cfg_scale=s.cfg if condition is not None else 0.0,
            )
        return out

    def best_cells(self, candidates: Sequence[Candidate]) -> list[Structure]:
        """The refined structures of the best fully refined candidates with distinct cells (formula and Niggli
        cell within 1 % in lengths and 1° in angles), at most ``cell_pass_cells``."""
        ok = sorted((c for c in candidates if not c.rejected and c.refinement.complete), key=lambda c: c.refinement.rwp)
        chosen: list[tuple[Structure, np.ndarray]] = []
        for c in ok:
            st = c.refinement.structure
            params = np.array(st.to_pymatgen().lattice.get_niggli_reduced_lattice().parameters)
            same = any(
                o.formula == st.formula
                and np.allclose(p[:3], params[:3], rtol=0.01)
                and np.allclose(p[3:], params[3:], atol=1.0)
                for o, p in chosen
            )
            if not same:
                chosen.append((st, params))
            if len(chosen) == self.settings.cell_pass_cells:
                break
        return [st for st, _ in chosen]

    def held_cells(self, candidates: Sequence[Candidate]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(numbers, cell)`` of each cell the second pass holds: first the primitive cells of up to
        ``index_cells`` lattices that index the pattern (:meth:`indexed_cells`, best first), then the
        :meth:`best_cells` (their Bravais symmetry made exact, :func:`lattice_with_its_symmetry`) that are not the
        lattice of an indexed cell already held.

        How an indexed cell is filled is ``held_contents``'s choice (:meth:`by_statistics`). By default each
        indexed cell is held with up to ``index_contents`` contents, the likeliest for its volume from the
        training cells first (:meth:`indexed_contents`), and ``held_weights`` says how its share of the samples
        is split between them. The rule before session 33 ("candidates") filled it with the composition of the
        best refined candidate whose volume per atom fits that cell (a multiple of its formula unit within 15 % of
        the volume, and no more atoms than the largest first-pass sample); a wrong candidate is a poor guide to
        the atom count (carbon-24 pattern 1 from its element list: the right cell held with 5 atoms from a
        candidate at 8 Å³ per atom, where the truth has 6 at 6.9). A cell that no content fills is passed over: a
        low-symmetry pattern can index to a large monoclinic cell of coincidences, ranked above its true
        triclinic one, that no carbon-24 cell could fill."""
        from pymatgen.core import Lattice

        ok = sorted((c for c in candidates if not c.rejected and c.refinement.complete), key=lambda c: c.refinement.rwp)
        largest = max((len(c.sample) for c in candidates), default=0)
        held: list[tuple[np.ndarray, np.ndarray]] = []
        self.held_indexed = []
        self.held_weights = []
        n_cells = 0
        for indexed in self.indexed_cells():
            if n_cells == self.settings.index_cells:
                break
            cell = indexed.primitive
            volume = abs(float(np.linalg.det(cell)))
            if self.by_statistics():
                options = self.indexed_contents(volume, [c.refinement.structure for c in ok], largest)
            else:
                options = []
                for c in ok:
                    contents = cell_contents_for(c.refinement.structure, volume)
                    if contents is not None and len(contents) <= largest:  # no bigger cells than the model made
                        options = [(contents, 1.0)]
                        break
            for contents, weight in options:
                held.append((contents, cell))
                self.held_indexed.append(indexed)
                self.held_weights.append(weight)
            n_cells += bool(options)
        lattices = [Lattice(cell) for _, cell in held]
        for st in self.best_cells(candidates):
            cell = lattice_with_its_symmetry(st.cell)
            if not any(same_lattice(other, Lattice(cell)) for other in lattices):
                held.append((st.numbers, cell))
        self.held = held
        return held

    def by_statistics(self) -> bool:
        """Whether the indexed cells are filled by :meth:`indexed_contents` (``held_contents`` "statistics")
        rather than from the best candidate's volume per atom ("candidates")."""
        return self.settings.held_contents == "statistics"

    def indexed_contents(
        self, volume: float, refined: Sequence[Structure], largest: int
    ) -> list[tuple[np.ndarray, float]]:
        """Up to ``index_contents`` cell contents (atomic numbers) for an indexed primitive cell of ``volume`` Å³,
        each with its share (summing to 1), likeliest first.

        The contents tried are whole multiples, of at most ``largest`` atoms, of the formula's unit when a formula
        is given, and only those the formula as given is a multiple or a part of (``C10`` allows 1, 2, 5, 10, 20,
        ... carbon atoms, not 8 or 12: a primitive cell's content divides that of any cell of the lattice, and the
        formula may be the content of a conventional cell or of the primitive one); with an element list, of the
        formula units of the model's training cells that the constraint allows
        (:meth:`CompositionConstraint.cell_proposals`) and of the refined candidates that it allows. A
        content of N atoms is weighted by how many training cells have it as their primitive cell
        (:meth:`DataStatistics.content_count`, plus ½ so that an unseen one keeps a chance) times the likelihood
        of V / N under the training cells' volume per atom (normal in ln(V / N),
        :meth:`DataStatistics.log_volume_per_atom`). With carbon-24's statistics and the element list only this
        puts the true atom count of the primitive cell first for 146 and within the first two for 194 of the first
        200 test structures, given their true cells (the likelihood alone: 84 and 152); with their formulas, first
        for 199 and alone for 197 (reduced formulas, before session 35: 146 and 74); only contents with at least
        ``1/(4·index_contents)`` of the weight are kept, and none whose volume per atom lies more than
        :data:`MAX_VOLUME_Z` standard deviations from the training cells' (a cell of coincidences that indexes
        a low-symmetry pattern is often far too big for any sampled cell size)."""
        from math import gcd

        stats = self.model.stats
        units: set[tuple[tuple[int, int], ...]] = set()
        given = None  # with a formula: how many of its reduced units it holds
        if self.constraint.formula is not None:
            contents = [self.constraint.formula]
            given = gcd(*self.constraint.formula.values())
        else:
            contents = list(self.constraint.cell_proposals(stats.cells))
            for st in refined:
                numbers = np.asarray(st.numbers)
                if not self.constraint.check(numbers):
                    contents.append(
                        {int(z): int(n) for z, n in zip(*np.unique(numbers, return_counts=True), strict=True)}
                    )
        for content in contents:
            k = 0
            for n in content.values():
                k = gcd(k, n)
            units.add(tuple(sorted((z, n // k) for z, n in content.items())))
        mean, spread = stats.log_volume_per_atom()
        scored: list[tuple[float, dict[int, int]]] = []
        for unit in sorted(units):
            size = sum(n for _, n in unit)
            for k in range(1, largest // size + 1):
                # the formula as given is the content of some cell of the lattice (a conventional cell, a supercell
                # of the primitive one, or the primitive one): the primitive content is a part or a multiple of it
                if given is not None and given % k and k % given:
                    continue
                content = {z: n * k for z, n in unit}
                z_score = (math.log(volume / (k * size)) - mean) / spread
                if abs(z_score) > MAX_VOLUME_Z:  # no plausible filling: the cell is passed over
                    continue
                scored.append((math.log(stats.content_count(content) + 0.5) - 0.5 * z_score**2, content))
        if not scored:
            return []
        scored.sort(key=lambda row: -row[0])
        top = scored[: self.settings.index_contents]
        weights = np.exp(np.array([w for w, _ in top]) - top[0][0])
        weights /= weights.sum()
        keep = [(c, w) for (_, c), w in zip(top, weights, strict=True) if w >= 0.25 / len(top)]
        total = sum(w for _, w in keep)
        return [
            (np.array([z for z, n in sorted(c.items()) for _ in range(n)], dtype=np.int64), w / total) for c, w in keep
        ]

    def cell_weights(self) -> list[float]:
        """The share of its cell's samples each entry of ``held_indexed`` gets (``held_weights``; 1 each when they
        were not set for these entries)."""
        n_indexed = len(self.held_indexed)
        return list(self.held_weights) if len(self.held_weights) == n_indexed else [1.0] * n_indexed

    def cell_shares(self, n_cells: int) -> list[int]:
        """How many of the ``cell_pass`` samples each of ``n_cells`` held cells gets (the first
        ``len(held_indexed)`` are the indexed ones, shared as ``held_weights`` say): ``index_share`` of them to
        the indexed cells and the rest to the refined ones when both are held, each group shared out evenly (the
        first cells get the remainder); all evenly otherwise."""
        s = self.settings
        n_indexed = len(self.held_indexed)
        weights = self.cell_weights()
        if s.index_share is None or n_indexed in (0, n_cells):
            return largest_remainder(s.cell_pass, list(weights) + [1.0] * (n_cells - n_indexed)) if n_cells else []
        to_indexed = round(s.cell_pass * s.index_share)
        return largest_remainder(to_indexed, weights) + largest_remainder(
            s.cell_pass - to_indexed, [1.0] * (n_cells - n_indexed)
        )

    def generate_in_cells(self, candidates: Sequence[Candidate], progress: Progress | None = None) -> list[Structure]:
        """``cell_pass`` samples with the lattice held at the :meth:`held_cells` (shared out as
        :meth:`cell_shares` says), each with the cell contents chosen for it; guided and conditioned as the first
        pass."""
        cells = self.held_cells(candidates)
        shares = self.cell_shares(len(cells))
        return self._sample_held(
            [(numbers, cell, None, n) for (numbers, cell), n in zip(cells, shares, strict=True)],
            self.settings.steps,
            1000,
            "generate in cells",
            progress,
        )

    def restart(self, candidates: Sequence[Candidate], progress: Progress | None = None) -> list[Structure]:
        """``restarts`` samples from the refined structures of the ``restart_from`` best distinct candidates
        (:meth:`rank`), shared out evenly: each structure's coordinates noised to ``restart_level`` and denoised
        again with its cell held (Bravais symmetry made exact) under the second pass's guidance, in
        ``restart_level`` × ``steps`` steps (SDEdit-style). Least squares from a structure with a few atoms
        0.3–0.5 Å off stops in the nearest minimum (a carbon-24 candidate at normalised RMS 0.25 from the truth
        refined to Rwp 9.7 % against the truth's 9.0 %); the pattern's gradient at the denoised estimate, with
        the model keeping the bonding sensible, may carry those atoms further. Measured (session 32): 8 restarts
        solved 1 of 24 carbon-24 patterns that the second pass had not, so they are off by default."""
        s = self.settings
        best = self.rank(list(candidates))[: s.restart_from]
        if not best:
            return []
        jobs = []
        for c, n in zip(best, largest_remainder(s.restarts, [1.0] * len(best)), strict=True):
            st = c.refinement.structure
            jobs.append((st.numbers, lattice_with_its_symmetry(st.cell), st.frac, n))
        steps = max(1, math.ceil(s.steps * s.restart_level))
        return self._sample_held(jobs, steps, 2000, "restart", progress)

    def _sample_held(
        self,
        jobs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, int]],
        steps: int,
        seed_offset: int,
        stage: str,
        progress: Progress | None,
    ) -> list[Structure]:
        """Samples with the lattice held: for each job ``(numbers, cell, start coordinates or None, n)``, ``n``
        samples of those cell contents in that cell, from the prior or restarted from the coordinates at
        ``restart_level``; guided with ``cell_guidance`` and conditioned as the first pass."""
        s = self.settings
        strength = s.guidance if s.cell_guidance is None else s.cell_guidance
        guidance = PhysicsGuidance(self.target, strength) if strength > 0 else None
        condition = self.pattern_condition() if s.condition and self.model.conditioned else None
        out: list[Structure] = []
        for j, (numbers, cell, start, n) in enumerate(jobs):
            if n == 0:
                continue

            def tick(step: int, total: int, done: int = j) -> None:
                if progress is not None:
                    progress(stage, done * total + step, len(jobs) * total)

            out += self.model.sample(
                n,
                steps=steps,
                sampler=s.sampler,
                seed=chunk_seed(s.seed, seed_offset + j),
                numbers=[np.asarray(numbers)] * n,
                cells=torch.as_tensor(np.asarray(cell, dtype=float)).expand(n, 3, 3).clone(),
                guidance=guidance,
                progress=tick,
                condition=None if condition is None else condition.expand(n, -1),
                cfg_scale=s.cfg if condition is not None else 0.0,
                start=None if start is None else ([np.asarray(start)] * n, s.restart_level),
            )
        return out

    def relax(
        self,
        structures: Sequence[Structure],
        hold_cell: bool = False,
        progress: Progress | None = None,
        stage: str = "relax",
    ) -> list[Structure]:
        """Each structure relaxed with CHGNet (:func:`~atomdiff.physics.potentials.relax_structures`, all in
        lockstep with one batched network call per step; cell held with ``hold_cell``), or kept as it is when
        the relaxation fails (cell collapses or blows up, non-finite energy) or ``relax_steps`` is 0. Should the
        batched call fail, the structures are relaxed one by one, so that one odd sample cannot end the solve."""
        import warnings

        from atomdiff.physics.potentials import chgnet_calculator, relax_structures

        s = self.settings
        if s.relax_steps == 0:
            return list(structures)
        if self._calculator is None:
            self._calculator = chgnet_calculator()

        def tick(done: int, total: int) -> None:
            if progress is not None:
                progress(stage, done, total)

        cell = not hold_cell
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                results = relax_structures(
                    list(structures),
                    self._calculator,
                    s.relax_steps,
                    s.relax_fmax,
                    cell=cell,
                    cell_filter=s.relax_filter,
                    progress=tick,
                )
            except Exception:  # relax one by one below
                results = []
                for k, structure in enumerate(structures):
                    try:
                        results += relax_structures(
                            [structure],
                            self._calculator,
                            s.relax_steps,
                            s.relax_fmax,
                            cell=cell,
                            cell_filter=s.relax_filter,
                        )
                    except Exception:
                        results.append((structure, math.nan))
                    tick(k + 1, len(structures))
        out = []
        for structure, (relaxed, energy) in zip(structures, results, strict=True):
            ok = math.isfinite(energy) and bool(np.isfinite(relaxed.frac).all())
            out.append(relaxed if ok else structure)
        return out

    def pattern_condition(self) -> torch.Tensor:
        """``(1, cond_dim)`` encoding of the measured pattern by the model's pattern encoder."""
        from atomdiff.models.pattern_encoder import RADIATIONS, pattern_features

        model = self.target.model
        encoder = self.model.net.pattern_encoder.config
        x, y = model.x.cpu().numpy(), self.target.y_obs.cpu().numpy()
        feats = pattern_features(x, y, model.axis, model.wavelength.primary, encoder)
        radiation = torch.tensor([RADIATIONS.index(model.radiation)])
        with torch.no_grad():
            return self.model.encode_patterns(torch.as_tensor(feats)[None], radiation).double()

    def idealised(self, structure: Structure) -> Structure:
        """The sample with the symmetry it has within ``idealise_symprec`` made exact (spglib's primitive
        standard cell), or the sample itself when that finds only P1 or changes the atom count. A cell a few
        hundredths of an Å off its symmetry splits peaks that belong together, and least squares started there
        can stay in the wrong minimum: a CHGNet-relaxed kesterite cell refined to Rwp 36.6 % as relaxed and
        6.2 % idealised, on the bundled pattern."""
        tolerance = self.settings.idealise_symprec
        if tolerance <= 0:
            return structure
        symbol, ideal = symmetry_of(structure, tolerance)
        return ideal if symbol != "P1 (1)" and len(ideal) == len(structure) else structure

    def check_reflections(self, structures: Sequence[Structure]) -> None:
        """Refuse a pattern in which no candidate has a reflection (wrong axis or wavelength)."""
        with torch.no_grad():
            peaks = self.target.model(StructureBatch.from_structures(list(structures))).y
        if not bool((peaks.abs().sum(-1) > 0).any()):
            lo, hi = float(self.target.x[0]), float(self.target.x[-1])
            raise InputError(
                f"no candidate has a reflection in the measured range {lo:g}–{hi:g} "
                f"({'2θ, degrees' if self.target.model.axis == 'two_theta' else 'Q, Å⁻¹'}): is the axis or the "
                "wavelength right?"
            )

    def refine(
        self,
        structures: Sequence[Structure],
        progress: Progress | None = None,
        stage: str = "refine",
        cell_known: bool = False,
        keep: int | None = None,
    ) -> list[Candidate]:
        """Refine each structure (made symmetric by :meth:`idealised`); candidate ``i`` is structure ``i``; the
        best ``keep`` (default ``refine_keep``) after the lattice stages are refined fully.

        With ``cell_known`` (samples drawn in a held cell: the pattern's indexed cell or a refined one) the
        search for the lattice's basin is left out — the volume and axial scans and the broadened stages, which
        can pull a right tetragonal c/a off it — and only the sharp stages run, from the held cell."""
        s = self.settings
        self.check_reflections(structures)
        keep = min(s.refine_keep if keep is None else keep, len(structures))
        symmetry = 1e-3 if s.refine_in_group else None  # idealised starts are exactly symmetric
        stages, scans = s.stages, {}
        if cell_known and any(st.extra_fwhm <= 0 for st in s.stages[:-1]):
            stages = tuple(st for st in s.stages[:-1] if st.extra_fwhm <= 0) + s.stages[-1:]
            scans = {"volume_scan": None, "axial_scan": None}
        refiner = RietveldRefiner(
            self.target, s.profile, stages=stages, keep=keep, texture=s.texture, symmetry=symmetry, **scans
        )

        def tick(done: int, total: int) -> None:
            if progress is not None:
                progress(stage, done, total)

        starts = [self.idealised(x) for x in structures]
        results = refiner.refine(starts, progress=tick)
        out = []
        for i, (sample, r) in enumerate(zip(starts, results, strict=True)):
            dmin = min_distance(r.structure)
            reason = ""
            if not math.isfinite(r.rwp):
                reason = "refinement failed"
            elif dmin < MIN_DISTANCE:
                reason = f"atoms {dmin:.2f} Å apart"
            out.append(Candidate(i, sample, r, dmin, reason))
        return out

    def rank(self, candidates: list[Candidate]) -> list[Candidate]:
        """Order by Rwp (fully refined first), drop duplicates of a better candidate, number the distinct."""
        from atomdiff.tasks.evaluate import make_matcher

        matcher = make_matcher()
        for c in candidates:  # ranked afresh (candidates may have been added since the last ranking)
            if c.duplicate_of is not None:
                c.rejected, c.duplicate_of = "", None
            c.rank = None
        ok = [c for c in candidates if not c.rejected]
        ok.sort(key=lambda c: (not c.refinement.complete, c.refinement.rwp))
        kept: list[Candidate] = []
        for c in ok:
            pm = c.refinement.structure.to_pymatgen()
            dup = next((k for k in kept if _fits(matcher, k.refinement.structure.to_pymatgen(), pm)), None)
            if dup is not None:
                c.rejected, c.duplicate_of = f"same structure as rank {dup.rank}", dup
                continue
            c.rank = len(kept) + 1
            kept.append(c)
        for c in candidates:
            if c.rank is not None or c.rejected.startswith("same"):
                c.space_group = symmetry_of(c.refinement.structure, self.settings.symprec)[0]
        return kept

    def with_orderings(
        self, ranked: list[Candidate], candidates: list[Candidate], progress: Progress | None = None
    ) -> list[Candidate]:
        """Refine the other orderings of the written candidates' near-equal scatterers and rank them with the rest.

        Where the radiation hardly tells two species apart (X-rays and Cu/Zn: 29 against 30 electrons), the
        pattern barely steers which of them a sample puts on which site, so a candidate carries the ordering its
        sample happened to have, and refinement cannot exchange species. For each of the ``top`` ranked
        candidates with Rwp within ``ordering_window`` of the best, the symmetry-distinct orderings of the
        species whose scattering powers differ by at most ``ordering_tolerance``
        (:func:`~atomdiff.physics.scattering.similar_scatterers`) over the sites they occupy
        (:func:`~atomdiff.structure.orderings.species_orderings`, at most ``orderings`` each, fewest atoms
        changed first) that are not already among the candidates in that window (StructureMatcher, as in :meth:`rank`)
        are refined from the candidate's refined cell and positions (sharp stages only, all fully) and added to
        ``candidates`` (origin ``"Cu/Zn ordering of sample k"``); the candidates are then ranked again.
        Kesterite and stannite Cu2ZnSnS4 are one exchange apart. Whether the pattern prefers one ordering is then
        a matter of their Rwp and ΔAIC (:meth:`compare`), not of which one the model happened to sample."""
        from atomdiff.physics.scattering import similar_scatterers
        from atomdiff.structure.orderings import species_orderings
        from atomdiff.tasks.evaluate import make_matcher

        s = self.settings
        close = [c for c in ranked if c.refinement.rwp <= s.ordering_window * ranked[0].refinement.rwp]
        top = close[: s.top]
        if s.ordering_tolerance <= 0 or s.orderings < 1 or not top:
            return ranked
        model = self.target.model
        present = sorted({int(z) for c in top for z in c.refinement.structure.numbers})
        groups = similar_scatterers(present, model.radiation, s.ordering_tolerance, model.neutron_lengths)
        if not groups:
            return ranked
        matcher = make_matcher()
        # a match far behind (that ordering refined poorly) does not count: it is refined again from a good start
        known = [c.refinement.structure.to_pymatgen() for c in close]
        starts, parents = [], []
        for c in top:
            for other in species_orderings(c.refinement.structure, groups, limit=s.orderings, symprec=s.symprec):
                pm = other.to_pymatgen()
                if any(_fits(matcher, k, pm) for k in known):
                    continue  # sampled and refined as well already: the pattern has ranked the two
                known.append(pm)
                starts.append(other)
                parents.append(c)
        if not starts:
            return ranked
        extra = self.refine(starts, progress, stage="orderings", cell_known=True, keep=len(starts))
        for c, start, parent in zip(extra, starts, parents, strict=True):
            changed = start.numbers != parent.refinement.structure.numbers
            names = "/".join(chemical_symbols[z] for z in sorted({int(z) for z in start.numbers[changed]}))
            c.index, c.origin = parent.index, f"{names} ordering of sample {parent.index}"
        candidates.extend(extra)
        return self.rank(candidates)

    def symmetrise(
        self, ranked: list[Candidate], candidates: Sequence[Candidate] = (), progress: Progress | None = None
    ) -> None:
        """Replace each written candidate by its most symmetric version that fits as well, then order ``ranked``
        again by the Rwp of these versions and renumber it (and the duplicate references among ``candidates``),
        so that rank order is the order of the Rwp written beside each structure.

        P1 refinement of positions lets noise pull atoms off their special positions, and powder data hardly
        tell a small off-centring apart (a Ti displaced by 0.2 Å along [111] in SrTiO3 changes Rwp by < 0.1 %
        relative). For each of the top candidates, the structure is symmetrised by spglib at tolerances of
        0.05–0.6 Å; each distinct version is refined again in its space group (lattice and coordinates only as
        the group allows, :mod:`atomdiff.refine.symmetry`; zero shift, profile, B), starting from the
        candidate's refined zero shift and profile, and the one with the highest space-group number whose Rwp is
        within 3 % (relative) of the P1 Rwp is kept — the fit, not the tolerance, decides how much symmetry the
        data allow. A candidate whose symmetric version is kept is thus refined with the parameters of its space
        group only, so two such candidates are compared on equal terms (kesterite and stannite differ only in
        how Cu and Zn order, and P1 freedom lets either mimic the other).
        """
        top = ranked[: self.settings.top]
        stages = (
            RefinementStage(("zero_shift", "profile"), 0.0, 3),
            RefinementStage(("lattice", "zero_shift", "profile", "b_iso", "positions"), 0.0, 6),
        )
        s = self.settings
        # per candidate: (space-group number, symbol, symmetrised cell) of each distinct version
        per_candidate: list[list[tuple[int, str, Structure]]] = []
        for c in top:
            seen: set[int] = set()
            versions: list[tuple[int, str, Structure]] = []
            for tol in SYMMETRY_TOLERANCES:
                symbol, sym = symmetry_of(c.refinement.structure, tol)
                number = int(symbol.split("(")[-1].rstrip(")")) if "(" in symbol else 1
                if number > 1 and number not in seen:
                    seen.add(number)
                    versions.append((number, symbol, sym))
            per_candidate.append(versions)
        total = sum(len(v) for v in per_candidate) * sum(st.iterations for st in stages)
        done = 0
        for c, versions in zip(top, per_candidate, strict=True):
            if not versions:
                continue
            refiner = RietveldRefiner(
                self.target,
                c.refinement.profile,
                c.refinement.zero_shift,
                stages=stages,
                volume_scan=None,
                texture=s.texture,
                symmetry=1e-3,  # each version is exactly symmetric: refine in the group spglib found
            )

            def tick(step: int, steps: int, before: int = done, width: int = len(versions)) -> None:
                if progress is not None:
                    progress("symmetrise", before + step * width, total)

            results = refiner.refine([v[2] for v in versions], progress=tick)
            done += len(versions) * sum(st.iterations for st in stages)
            best: tuple[int, str, Refinement] | None = None
            for (number, symbol, _), r in zip(versions, results, strict=True):
                if not math.isfinite(r.rwp) or r.rwp > 1.03 * c.refinement.rwp:
                    continue
                if best is None or number > best[0]:
                    best = (number, symbol, r)
            if best is not None:
                c.refinement, c.space_group = best[2], best[1]
                c.min_distance = min_distance(best[2].structure)
        ranked.sort(key=lambda c: (not c.refinement.complete, c.refinement.rwp))
        for k, c in enumerate(ranked, 1):
            c.rank = k
        for c in candidates:
            if c.duplicate_of is not None:
                c.rejected = f"same structure as rank {c.duplicate_of.rank}"

    def compare(self, ranked: Sequence[Candidate]) -> None:
        """Set ``delta_aic`` of the written candidates (:func:`compare_candidates`)."""
        compare_candidates(list(ranked[: self.settings.top]), self.target)


def compare_candidates(candidates: Sequence[Candidate], target: PatternTarget) -> None:
    """Set ``delta_aic`` of each candidate: AIC = χ² + 2 P (χ² = Σ w (yo − yc)², P refined parameters), minus
    that of the first. χ² means something only when the weights are the inverse variances (counts or given
    uncertainties, :meth:`PatternTarget.expected_rwp`); otherwise nothing is set. Candidate structures are not
    nested models (kesterite is not stannite with a parameter fixed), so a likelihood criterion, not an F test:
    ΔAIC above 10 means the data rule the candidate out beside the first, below 2 that they cannot tell the two
    apart (Burnham and Anderson's scale)."""
    if not candidates or target.expected_rwp() is None:
        return
    norm = float((target.weights * target.y_obs**2).sum())

    def aic(c: Candidate) -> float:
        return c.refinement.rwp**2 * norm + 2 * c.refinement.n_parameters

    best = aic(candidates[0])
    for c in candidates:
        c.delta_aic = aic(c) - best


def _preference(c: Candidate) -> tuple[bool, bool, float]:
    """Sort key of a candidate: allowed, then fully refined, then low Rwp."""
    return (bool(c.rejected), not c.refinement.complete, c.refinement.rwp if math.isfinite(c.refinement.rwp) else 9e9)


def _fits(matcher, a, b) -> bool:
    try:
        return bool(matcher.fit(a, b))
    except Exception:
        return False


# --- output --------------------------------------------------------------------------------------------
def lattice_row(structure: Structure) -> dict[str, float]:
    """``a, b, c`` (Å, 5 decimals) and ``alpha, beta, gamma`` (degrees, 3 decimals) for table rows."""
    values = structure.lattice_parameters
    return {name: round(v, 5 if k < 3 else 3) for k, (name, v) in enumerate(zip(LATTICE_COLUMNS, values, strict=True))}


def candidate_row(c: Candidate) -> dict[str, object]:
    s = c.refinement.structure
    return {
        "rank": c.rank if c.rank is not None else "",
        "formula": s.formula,
        "space_group": c.space_group,
        "rwp": round(c.refinement.rwp, 6),
        "n_parameters": c.refinement.n_parameters,
        "delta_aic": "" if c.delta_aic is None else round(c.delta_aic, 2),
        **lattice_row(s),
        "volume": round(s.volume, 4),
        "density": round(s.density, 5),
        "min_distance": round(c.min_distance, 4) if math.isfinite(c.min_distance) else "",
        "zero_shift": round(c.refinement.zero_shift, 5),
        "texture_ratio": "" if c.refinement.texture_ratio is None else round(c.refinement.texture_ratio, 4),
        "file": c.file,
        "sample": c.index,
        "origin": c.origin,
        "rejected": c.rejected,
    }


def write_candidates_csv(candidates: Sequence[Candidate], path: Path) -> None:
    rows = sorted(candidates, key=lambda c: (c.rank is None, c.rank or 0, c.refinement.rwp))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CANDIDATE_COLUMNS)
            writer.writeheader()
            writer.writerows(candidate_row(c) for c in rows)


def write_ranked(
    ranked: Sequence[Candidate],
    target: PatternTarget,
    pattern: MeasuredPattern,
    folder: Path,
    settings: SolveSettings,
) -> list[Path]:
    """CIF and fit plot of each of the top candidates; returns the paths of the plots."""
    from atomdiff.report.plots import plot_fit

    width = max(2, len(str(len(ranked))))
    plots = []
    for c in ranked[: settings.top]:
        r = c.refinement
        name = f"{c.rank:0{width}d}_{r.structure.formula}_{_safe(c.space_group.split(' ')[0]) or 'P1'}"
        c.file = f"{name}.cif"
        with atomic_path(folder / c.file) as tmp:
            tmp.write_text(symmetrised_cif(r.structure, settings.symprec))
        model = PowderDiffractionModel(
            target.model.radiation, target.model.wavelength, target.model.x, target.model.axis, r.profile, r.zero_shift
        )
        ticks = [row["two_theta"] + r.zero_shift for row in peak_table(model, r.structure)]
        if target.model.axis == "q":
            lam = target.model.wavelength.primary
            ticks = [4 * math.pi * math.sin(math.radians(t / 2)) / lam for t in ticks]
        plot = folder / f"{c.rank:0{width}d}_fit.png"
        plot_fit(
            plot,
            pattern.x,
            pattern.y,
            r.y_calc,
            axis=target.model.axis,
            ticks=ticks,
            title=f"#{c.rank} {r.structure.formula} {c.space_group}  Rwp = {100 * r.rwp:.2f} %",
        )
        plots.append(plot)
    return plots


@dataclasses.dataclass
class SolveResult:
    ranked: list[Candidate]
    candidates: list[Candidate]
    folder: Path
    indexed: list[IndexedCell] = dataclasses.field(default_factory=list)
    held_indexed: list[IndexedCell] = dataclasses.field(default_factory=list)
    """The indexed cells the second pass held (one entry per content held in it)."""
    expected_rwp: float | None = None
    """Rexp of the pattern's counting noise (``None`` when its weights are not counts or uncertainties)."""
    skipped: list[str] = dataclasses.field(default_factory=list)
    """Steps skipped because a candidate fitted to the counting noise (``"relaxation"``, ``"second pass"``)."""
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    """Wall time of each stage (the progress stages, ``"setup"`` before the first and ``"write"`` after the
    last), in the order they ran."""
    held_contents: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    """For each entry of ``held_indexed``: the cell formula it was held with and its share of that cell's
    samples."""

    def held_note(self, cell: IndexedCell) -> str:
        """What the second pass did with an indexed cell, for the reports: "" when it was not held (or the second
        pass was skipped), else which contents it was held with and their shares."""
        if "second pass" in self.skipped:
            return ""
        held = [
            f"{formula} ({share:.0%})" if share < 1 else formula
            for other, (formula, share) in zip(self.held_indexed, self.held_contents, strict=False)
            if other is cell
        ]
        return f" — held in the second pass with {', '.join(held)}" if held else ""


class StageClock:
    """A progress callback that passes its calls on and charges the time since the previous call to the stage
    of the current one (a stage's first call comes after its first piece of work, so work is charged to the stage
    that did it)."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def charge(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def __call__(self, stage: str, done: float, total: float) -> None:
        self.charge(stage)
        if self.progress is not None:
            self.progress(stage, done, total)


def solve(
    model: CrystalDiffusion,
    pattern: MeasuredPattern,
    constraint: CompositionConstraint,
    folder: str | os.PathLike,
    *,
    radiation: str = "xray",
    wavelength: str | float = "CuKa1",
    settings: SolveSettings | None = None,
    progress: Progress | None = None,
) -> SolveResult:
    """Run the whole pipeline and write the output folder (see the module docstring)."""
    from atomdiff.report.html import write_solve_report

    settings = settings or SolveSettings()
    clock = StageClock(progress)
    target = build_target(pattern, radiation, wavelength, settings.profile, settings.background_order)
    solver = Solver(model, target, constraint, settings)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError("output must be a folder, and this is a file", path=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    clock.charge("setup")
    progress = clock

    def keep_samples(samples: list[Structure]) -> None:
        write_structures(samples, folder / "generated.extxyz")

    candidates = solver.run(progress, keep_samples)
    if solver.indexed_cells():
        from atomdiff.tasks.index import write_cells_csv

        write_cells_csv(solver.indexed_cells(), folder / "indexing.csv")
    write_structures([c.sample for c in candidates], folder / "relaxed.extxyz")
    ranked = solver.rank(candidates)
    write_candidates_csv(candidates, folder / "candidates.csv")
    ranked = solver.with_orderings(ranked, candidates, progress)
    solver.symmetrise(ranked, candidates, progress)
    solver.compare(ranked)
    plots = write_ranked(ranked, target, pattern, folder, settings)
    write_candidates_csv(candidates, folder / "candidates.csv")
    result = SolveResult(
        ranked,
        candidates,
        folder,
        solver.indexed_cells(),
        solver.held_indexed,
        target.expected_rwp(),
        list(solver.skipped),
        held_contents=[
            (hill_formula(numbers), share)
            for (numbers, _), share in zip(solver.held, solver.cell_weights(), strict=False)
        ],
    )
    write_solve_report(folder / "report.html", pattern, ranked[: settings.top], plots, candidates, settings, result)
    clock.charge("write")
    result.stage_seconds = {k: round(v, 2) for k, v in clock.seconds.items()}
    summary = {
        "seconds": round(sum(clock.seconds.values()), 2),
        "stage_seconds": result.stage_seconds,
        "expected_rwp": result.expected_rwp,
        "skipped": result.skipped,
        "candidates": len(candidates),
        "best": ranked[0].file if ranked else None,
        "settings": dataclasses.asdict(settings),
    }
    with atomic_path(folder / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return result
