"""The one periodic structure type of atomdiff."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from atomdiff.errors import InputError
from atomdiff.structure.elements import MAX_Z, atomic_masses, chemical_symbols

if TYPE_CHECKING:  # pragma: no cover
    import ase
    import pymatgen.core

_AVOGADRO = 6.02214076e23


def hill_formula(numbers) -> str:
    """Formula of the atomic numbers ``numbers`` in Hill order (``C`` first, then ``H``, then alphabetical), e.g.
    ``CaO3Ti``."""
    counts = Counter(chemical_symbols[int(z)] for z in numbers)
    order = sorted(counts, key=lambda s: (s != "C", s != "H" if "C" in counts else False, s))
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


@dataclasses.dataclass(frozen=True, eq=False)
class Structure:
    """A periodic arrangement of atoms.

    Attributes:
        numbers: atomic numbers, shape ``(n_atoms,)``.
        frac: fractional coordinates, shape ``(n_atoms, 3)``; not wrapped into [0, 1).
        cell: lattice vectors as rows, shape ``(3, 3)``, in Å.
        pbc: periodicity along each lattice vector.
        info: free-form metadata (``label``, source file, ...), carried through I/O where the format allows.
    """

    numbers: np.ndarray
    frac: np.ndarray
    cell: np.ndarray
    pbc: tuple[bool, bool, bool] = (True, True, True)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        frac = np.asarray(self.frac, dtype=np.float64).reshape(-1, 3)
        cell = np.asarray(self.cell, dtype=np.float64)
        if cell.shape != (3, 3):
            raise InputError(f"cell must have shape (3, 3), got {cell.shape}")
        if frac.shape[0] != numbers.shape[0]:
            raise InputError(f"{numbers.shape[0]} atomic numbers but {frac.shape[0]} positions")
        if numbers.size and (numbers.min() < 1 or numbers.max() > MAX_Z):
            bad = numbers[(numbers < 1) | (numbers > MAX_Z)][0]
            raise InputError(f"unknown element: atomic number {bad}")
        if not np.all(np.isfinite(frac)) or not np.all(np.isfinite(cell)):
            raise InputError("structure has non-finite coordinates or cell")
        pbc = tuple(bool(p) for p in np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)))
        if all(pbc) and abs(np.linalg.det(cell)) < 1e-8:
            raise InputError("cell is singular (zero volume)")
        for name, value in (("numbers", numbers), ("frac", frac), ("cell", cell)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "pbc", pbc)

    # --- derived quantities -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def n_atoms(self) -> int:
        return len(self)

    @property
    def cart(self) -> np.ndarray:
        """Cartesian positions in Å, shape ``(n_atoms, 3)``."""
        return self.frac @ self.cell

    @property
    def volume(self) -> float:
        """Cell volume in Å³."""
        return float(abs(np.linalg.det(self.cell)))

    @property
    def symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.numbers]

    @property
    def formula(self) -> str:
        """Formula of the cell in Hill order (``C`` first, then ``H``, then alphabetical), e.g. ``CaO3Ti``."""
        return hill_formula(self.numbers)

    @property
    def density(self) -> float:
        """Mass density in g/cm³."""
        grams = float(np.sum(atomic_masses[self.numbers])) / _AVOGADRO
        return grams / (self.volume * 1e-24)

    @property
    def lattice_parameters(self) -> tuple[float, float, float, float, float, float]:
        """``(a, b, c, alpha, beta, gamma)`` in Å and degrees."""
        a, b, c = np.linalg.norm(self.cell, axis=1)
        alpha = np.degrees(np.arccos(np.dot(self.cell[1], self.cell[2]) / (b * c)))
        beta = np.degrees(np.arccos(np.dot(self.cell[0], self.cell[2]) / (a * c)))
        gamma = np.degrees(np.arccos(np.dot(self.cell[0], self.cell[1]) / (a * b)))
        return float(a), float(b), float(c), float(alpha), float(beta), float(gamma)

    def replace(self, **changes: Any) -> Structure:
        return dataclasses.replace(self, **changes)

    def wrapped(self) -> Structure:
        """The same structure with fractional coordinates in [0, 1) along periodic directions."""
        frac = self.frac.copy()
        for k in range(3):
            if self.pbc[k]:
                frac[:, k] -= np.floor(frac[:, k])
        return self.replace(frac=frac)

    def repeat(self, reps: tuple[int, int, int]) -> Structure:
        """Supercell ``reps[0] x reps[1] x reps[2]``."""
        reps = tuple(int(r) for r in reps)
        shifts = np.array(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij")).reshape(3, -1).T
        frac = (self.frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3) / np.array(reps)
        numbers = np.tile(self.numbers, len(shifts))
        return self.replace(numbers=numbers, frac=frac, cell=self.cell * np.array(reps)[:, None])

    # --- bridges ------------------------------------------------------------------------------------
    @classmethod
    def from_ase(cls, atoms: ase.Atoms) -> Structure:
        cell = np.array(atoms.cell.array, dtype=np.float64)
        frac = atoms.cell.scaled_positions(atoms.positions) if abs(np.linalg.det(cell)) > 1e-8 else None
        if frac is None:
            raise InputError("ASE Atoms has no cell: a periodic structure needs three lattice vectors")
        info = {
            k: v.item() if isinstance(v, np.generic) else v
            for k, v in atoms.info.items()
            if isinstance(v, str | int | float | bool | np.integer | np.floating | np.bool_)
        }
        return cls(atoms.numbers.copy(), frac, cell, tuple(bool(p) for p in atoms.pbc), info)

    def to_ase(self) -> ase.Atoms:
        import ase

        atoms = ase.Atoms(numbers=self.numbers, cell=self.cell, pbc=self.pbc)
        atoms.set_scaled_positions(self.frac)
        # set_scaled_positions is exact up to rounding; keep the unwrapped fractional coordinates
        atoms.positions = self.frac @ self.cell
        atoms.info.update(self.info)
        return atoms

    @classmethod
    def from_pymatgen(cls, structure: pymatgen.core.Structure) -> Structure:
        if not structure.is_ordered:
            raise InputError("disordered (partially occupied) sites are not supported; order the structure first")
        numbers = [site.specie.Z for site in structure]
        info = {}
        if structure.properties:
            info = {k: v for k, v in structure.properties.items() if isinstance(v, str | int | float | bool)}
        return cls(numbers, structure.frac_coords.copy(), structure.lattice.matrix.copy(), (True, True, True), info)

    def to_pymatgen(self) -> pymatgen.core.Structure:
        from pymatgen.core import Lattice
        from pymatgen.core import Structure as PmgStructure

        lattice = Lattice(self.cell, pbc=self.pbc)
        return PmgStructure(lattice, self.symbols, self.frac, coords_are_cartesian=False, to_unit_cell=False)
