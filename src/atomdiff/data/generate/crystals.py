"""Crystals relaxed with CHGNet, for training crystal diffusion models.

Two sources of starting structures (``source``):

- ``"pyxtal"``: for each composition of the chosen chemical systems and each number of formula units Z that
  fits within ``max_atoms``, candidates drawn in random space groups compatible with the composition (PyXtal's
  Wyckoff assignment);
- ``"tetrahedral"``: for the compositions with one cation per anion (kesterite, chalcopyrite, sphalerite, ...),
  every symmetry-distinct cation ordering on the sphalerite and wurtzite frameworks
  (:mod:`atomdiff.data.generate.tetrahedral`); when a composition has more orderings than ``per_composition``,
  the ones with the lowest CHGNet energy as ideal frameworks are taken (the screened list is stored in
  ``plan.json``, so a resumed run relaxes the same ones). Compositions that are not tetrahedral are skipped.

Every candidate is relaxed (cell and positions) with the pretrained CHGNet universal potential, whose weights
ship inside its package (no download), and stored with its energy per atom; a relaxation that collapses or
blows up the cell (:data:`~atomdiff.physics.potentials.VOLUME_RANGE`) is stopped and stored with a NaN energy,
so it never enters the set.
The finished set keeps, for each composition, the structures within ``energy_window`` eV/atom of the lowest
energy found.

Resumable: candidate ``i`` is fully determined by ``(seed, i)`` and written as ``structures/{i:06d}.extxyz``
(atomically) once relaxed; a rerun skips the candidates already there, so an interrupted run loses at most
the structure being relaxed. ``train.csv`` (CSV of CIFs, the format of the CDVAE benchmarks, with
``energy_per_atom`` and ``composition`` columns) is written by :meth:`CrystalDataGenerator.finish`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from atomdiff.diffusion.constraints import parse_formula
from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.potentials import chgnet_calculator, relax_structure
from atomdiff.structure.elements import chemical_symbols
from atomdiff.structure.io import read_structures, structure_to_cif, write_structures
from atomdiff.structure.structure import Structure

#: the chalcogenide absorbers of the showcase and their common secondary phases (formula units)
SYSTEMS: dict[str, tuple[str, ...]] = {
    "Cu-Zn-Sn-S": ("Cu2ZnSnS4", "Cu2SnS3", "ZnS", "SnS", "SnS2", "Cu2S", "CuS"),
    "Cu-Zn-Sn-Se": ("Cu2ZnSnSe4", "Cu2SnSe3", "ZnSe", "SnSe", "SnSe2", "Cu2Se"),
    "Cu-In-Ga-Se": ("CuInSe2", "CuGaSe2", "In2Se3", "Ga2Se3", "CuSe"),
    "Sb-Se": ("Sb2Se3",),
    "Cd-Te": ("CdTe",),
    "Bi-S-I": ("BiSI", "Bi2S3", "BiI3"),
}


SOURCES = ("pyxtal", "tetrahedral")

#: space-group numbers of each crystal system (International Tables), for ``space_groups`` given by name
CRYSTAL_SYSTEMS: dict[str, range] = {
    "triclinic": range(1, 3),
    "monoclinic": range(3, 16),
    "orthorhombic": range(16, 75),
    "tetragonal": range(75, 143),
    "trigonal": range(143, 168),
    "hexagonal": range(168, 195),
    "cubic": range(195, 231),
}


def parse_space_groups(text: str) -> tuple[int, ...]:
    """``"orthorhombic"``, ``"16-74"``, ``"62,63"`` or a mix (``"62,cubic"``) → sorted space-group numbers."""
    groups: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part in CRYSTAL_SYSTEMS:
            groups.update(CRYSTAL_SYSTEMS[part])
            continue
        bounds = part.split("-")
        try:
            lo, hi = (int(bounds[0]), int(bounds[-1])) if len(bounds) <= 2 else (0, 0)
        except ValueError:
            lo = hi = 0
        if not 1 <= lo <= hi <= 230:
            raise InputError(
                f"space groups: expected numbers 1-230, ranges like 16-74 or crystal systems "
                f"({', '.join(CRYSTAL_SYSTEMS)}), comma-separated; got {part!r}"
            )
        groups.update(range(lo, hi + 1))
    if not groups:
        raise InputError(f"space groups: none given in {text!r}")
    return tuple(sorted(groups))


#: the compositions of :data:`SYSTEMS` whose known structures are tetrahedral frameworks (SnS, CuS, ... have one
#: cation per anion too but other structures, so ``--source tetrahedral`` leaves them out of a system)
TETRAHEDRAL = frozenset({"Cu2ZnSnS4", "Cu2SnS3", "ZnS", "Cu2ZnSnSe4", "Cu2SnSe3", "ZnSe", "CuInSe2", "CuGaSe2", "CdTe"})


@dataclasses.dataclass
class Candidate:
    """Candidate ``index``: ``z`` formula units (PyXtal), or the ``z``-th screened ordering (tetrahedral)."""

    index: int
    composition: str
    z: int


def _is_tetrahedral(composition: str) -> bool:
    from atomdiff.data.generate.tetrahedral import split_composition

    try:
        split_composition(composition)
    except InputError:
        return False
    return True


class CrystalDataGenerator:
    """Generate, relax and filter crystals for a list of compositions.

    Args:
        folder: output folder (created; reused on resume).
        compositions: formula units, e.g. ``["Cu2ZnSnS4", "ZnS"]``.
        per_composition: candidates per composition (spread over the allowed Z).
        max_atoms: largest cell (atoms).
        relax_steps: FIRE steps of the CHGNet relaxation.
        energy_window: eV/atom above the lowest energy of a composition kept in ``train.csv``.
        seed: makes candidate ``i`` reproducible.
        source: ``"pyxtal"`` (random symmetric crystals) or ``"tetrahedral"`` (cation orderings, see the module).
        space_groups: the space-group numbers random crystals are drawn in (PyXtal source; default: 2-230). A
            search in a known crystal system finds structures with many atoms far more often than one over all
            230 groups, most of which cannot hold the composition's Wyckoff multiplicities.
    """

    def __init__(
        self,
        folder: str | Path,
        compositions: Sequence[str],
        per_composition: int = 50,
        max_atoms: int = 20,
        relax_steps: int = 300,
        energy_window: float = 0.1,
        seed: int = 0,
        source: str = "pyxtal",
        space_groups: Sequence[int] | None = None,
    ):
        if source not in SOURCES:
            raise InputError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        self.space_groups = None if space_groups is None else tuple(sorted({int(g) for g in space_groups}))
        if self.space_groups is not None:
            if source != "pyxtal":
                raise InputError("space groups restrict the random crystals of the 'pyxtal' source only")
            if not self.space_groups:
                raise InputError("space groups: an empty list")
            if not 1 <= self.space_groups[0] <= self.space_groups[-1] <= 230:
                raise InputError(f"space groups must be numbers 1-230, got {list(self.space_groups)}")
        self._fits: dict[str, list[int]] = {}
        self.source = source
        if source == "tetrahedral":
            compositions = [c for c in compositions if _is_tetrahedral(c)]
        if not compositions:
            raise InputError("no compositions to generate" + (" (none is tetrahedral)" if source != "pyxtal" else ""))
        if per_composition < 1 or max_atoms < 1 or relax_steps < 0 or energy_window < 0:
            raise InputError("per-composition, max-atoms must be positive and relax-steps, energy-window ≥ 0")
        self.folder = Path(folder)
        self.compositions = [self._check(c, max_atoms) for c in compositions]
        self.per_composition = int(per_composition)
        self.max_atoms = int(max_atoms)
        self.relax_steps = int(relax_steps)
        self.energy_window = float(energy_window)
        self.seed = int(seed)
        self._calculator = None
        self._orderings: dict[str, list[Structure]] = {}

    @staticmethod
    def _check(text: str, max_atoms: int) -> str:
        comp = parse_formula(text)
        if sum(comp.values()) > max_atoms:
            raise InputError(
                f"{text}: one formula unit has {sum(comp.values())} atoms, more than --max-atoms {max_atoms}"
            )
        return text

    # --- plan ---------------------------------------------------------------------------------------
    def plan(self) -> list[Candidate]:
        if self.source == "tetrahedral":
            return self._tetrahedral_plan()
        out = []
        for comp_text in self.compositions:
            per_unit = sum(parse_formula(comp_text).values())
            zs = list(range(1, self.max_atoms // per_unit + 1))
            if self.space_groups is not None:
                zs = self._compatible(comp_text, zs)
            for k in range(self.per_composition):
                out.append(Candidate(len(out), comp_text, zs[k % len(zs)]))
        return out

    def _compatible(self, composition: str, zs: list[int]) -> list[int]:
        """The numbers of formula units that some requested space group can hold (PyXtal's Wyckoff check; counts
        of the conventional cell, as PyXtal builds them); checked once per composition (``plan`` runs again in
        ``finish``)."""
        if composition not in self._fits:
            from pyxtal.symmetry import Group

            units = list(parse_formula(composition).values())
            groups = [Group(g) for g in self.space_groups or ()]
            self._fits[composition] = [
                z for z in zs if any(g.check_compatible([n * z for n in units])[0] for g in groups)
            ]
        if not self._fits[composition]:
            raise InputError(
                f"{composition}: no cell of up to --max-atoms {self.max_atoms} atoms fits the requested space groups"
            )
        return self._fits[composition]

    def _settings(self) -> dict:
        settings = {
            "compositions": self.compositions,
            "per_composition": self.per_composition,
            "max_atoms": self.max_atoms,
            "relax_steps": self.relax_steps,
            "seed": self.seed,
        }
        if self.source != "pyxtal":  # folders of earlier runs (PyXtal only) keep resuming
            settings["source"] = self.source
        if self.space_groups is not None:
            settings["space_groups"] = list(self.space_groups)
        return settings

    def orderings(self, composition: str) -> list[Structure]:
        """The distinct tetrahedral orderings of ``composition`` (ideal frameworks), enumerated once."""
        from atomdiff.data.generate.tetrahedral import tetrahedral_structures

        if composition not in self._orderings:
            found = tetrahedral_structures(composition, self.max_atoms)
            self._orderings[composition] = [s.replace(info={"parent": name}) for name, s in found]
        return self._orderings[composition]

    def _tetrahedral_plan(self) -> list[Candidate]:
        """Orderings to relax, per composition the ``per_composition`` lowest in CHGNet energy as ideal
        frameworks; screened once and stored in ``plan.json``."""
        path = self.folder / "plan.json"
        if path.is_file():
            return [Candidate(**row) for row in json.loads(path.read_text())]
        out = []
        for comp in self.compositions:
            structures = self.orderings(comp)
            chosen = range(len(structures))
            if len(structures) > self.per_composition:
                energies = [self.energy(s) for s in structures]
                chosen = sorted(np.argsort(energies, kind="stable")[: self.per_composition].tolist())
            out += [Candidate(len(out) + k, comp, int(j)) for k, j in enumerate(chosen)]
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps([dataclasses.asdict(c) for c in out]) + "\n")
        return out

    def _check_folder(self) -> None:
        """A folder holding a run with other settings is refused (its structures would not be reproducible)."""
        path = self.folder / "settings.json"
        if path.is_file():
            old = json.loads(path.read_text())
            if old != self._settings():
                raise InputError(
                    "folder holds a run with other settings; use another folder or the same settings to resume",
                    path=str(path),
                )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(self._settings(), indent=1) + "\n")

    # --- one candidate --------------------------------------------------------------------------------
    def starting_structure(self, cand: Candidate) -> Structure:
        """The structure candidate ``cand`` starts from (reproducible from the seed and its index)."""
        if self.source == "pyxtal":
            return self.random_crystal(cand)
        rng = np.random.default_rng([self.seed, cand.index])
        ideal = self.orderings(cand.composition)[cand.z]
        # a small rattle lets the relaxation leave the ideal framework where a distortion lowers the energy
        return ideal.replace(frac=ideal.frac + rng.normal(0.0, 0.02, ideal.frac.shape) @ np.linalg.inv(ideal.cell))

    def random_crystal(self, cand: Candidate) -> Structure:
        """A random crystal of the candidate's composition and Z in a random compatible space group (of
        ``space_groups`` when given)."""
        from pyxtal import pyxtal

        rng = np.random.default_rng([self.seed, cand.index])
        comp = parse_formula(cand.composition)
        species = [chemical_symbols[z] for z in comp]
        counts = [n * cand.z for n in comp.values()]
        for _ in range(200):
            # the unrestricted draw stays as it was, so that earlier runs resume with the same candidates
            group = int(rng.integers(2, 231) if self.space_groups is None else rng.choice(self.space_groups))
            crystal = pyxtal()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    crystal.from_random(3, group, species, counts, random_state=int(rng.integers(2**31)))
            except Exception:  # composition incompatible with this group, or no room: try another group
                continue
            if crystal.valid:
                return Structure.from_pymatgen(crystal.to_pymatgen())
        where = "" if self.space_groups is None else " among the requested space groups"
        raise RuntimeError(f"PyXtal found no space group{where} for {cand.composition} × {cand.z} in 200 tries")

    def _load_calculator(self):
        if self._calculator is None:
            self._calculator = chgnet_calculator()
        return self._calculator

    def energy(self, structure: Structure) -> float:
        """CHGNet energy per atom (eV) of ``structure`` as it is."""
        pred = self._load_calculator().model.predict_structure(structure.to_pymatgen())
        return float(pred["e"])

    def relax(self, structure: Structure) -> tuple[Structure, float]:
        """CHGNet relaxation of cell and positions; returns the structure and its energy per atom (eV), NaN
        for a relaxation that collapsed or blew up the cell (:func:`~atomdiff.physics.potentials.relax_structure`)."""
        if self.relax_steps == 0:
            return structure, self.energy(structure)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return relax_structure(structure, self._load_calculator(), self.relax_steps)

    def path(self, cand: Candidate) -> Path:
        return self.folder / "structures" / f"{cand.index:06d}.extxyz"

    # --- run --------------------------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Relax every planned candidate not yet on disk; returns how many were computed now."""
        self._check_folder()
        (self.folder / "structures").mkdir(exist_ok=True)
        plan = self.plan()
        done = sum(self.path(c).is_file() for c in plan)
        computed = 0
        if progress is not None:
            progress(done, len(plan))
        for cand in plan:
            if self.path(cand).is_file():
                continue
            crystal = self.starting_structure(cand)
            relaxed, energy = self.relax(crystal)
            info = {"energy_per_atom": energy, "composition": cand.composition, "candidate": cand.index}
            if "parent" in crystal.info:
                info["parent"] = crystal.info["parent"]
            write_structures(relaxed.replace(info=info), self.path(cand))
            computed += 1
            done += 1
            if progress is not None:
                progress(done, len(plan))
        return computed

    def finish(self) -> tuple[int, int]:
        """Write ``train.csv`` with the structures within the energy window; returns (kept, relaxed)."""
        found: list[Structure] = []
        for cand in self.plan():
            path = self.path(cand)
            if path.is_file():
                found.append(read_structures(path)[0])
        best: dict[str, float] = {}
        for s in found:
            comp, e = s.info["composition"], float(s.info["energy_per_atom"])
            if math.isfinite(e):
                best[comp] = min(best.get(comp, math.inf), e)
        kept = [
            s for s in found if float(s.info["energy_per_atom"]) <= best[s.info["composition"]] + self.energy_window
        ]
        with atomic_path(self.folder / "train.csv") as tmp:
            with open(tmp, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["", "material_id", "composition", "energy_per_atom", "cif"])
                for k, s in enumerate(kept):
                    writer.writerow(
                        [
                            k,
                            f"gen-{int(s.info['candidate']):06d}",
                            s.info["composition"],
                            s.info["energy_per_atom"],
                            structure_to_cif(s),
                        ]
                    )
        return len(kept), len(found)
