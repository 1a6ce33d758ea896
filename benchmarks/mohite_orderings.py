"""How the coordinates of :func:`atomdiff.examples.mohite` (monoclinic Cu2SnS3, Cc) were computed.

    .venv/bin/python benchmarks/mohite_orderings.py      # ~3 minutes on one thread

No package atomdiff depends on ships the structure of mohite, so it is found from what is published about it: a
sphalerite superstructure whose cell is a = ½[1 1 2], b = 3/2[1 −1 0], c = ½[1 1 −2] of cubic ZnS (12 cation
sites, 12 S). Every placement of 4 Sn and 8 Cu on the cation sites (495) is scored with CHGNet at a = 5.43 Å;
the lowest is relaxed (cell free) and its space group, cell and independent sites are printed, with the energy
of the second-lowest placement for comparison. The printed cell and sites are what ``mohite()`` lists.
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.build import make_supercell
from chgnet.model import CHGNet, StructOptimizer
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer


def main() -> None:
    a = 5.43
    primitive = np.array([[0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cell = Atoms("CuS", positions=np.array([[0, 0, 0], [0.25, 0.25, 0.25]]) * a, cell=primitive * a, pbc=True)
    target = np.array([[0.5, 0.5, 1], [1.5, -1.5, 0], [0.5, 0.5, -1]])  # the mohite cell in cubic units
    supercell = make_supercell(cell, np.round(target @ np.linalg.inv(primitive)).astype(int))
    cations = [i for i, z in enumerate(supercell.numbers) if z == 29]
    placements = []
    for tin in itertools.combinations(cations, 4):
        atoms = supercell.copy()
        numbers = atoms.numbers.copy()
        numbers[list(tin)] = 50
        atoms.numbers = numbers
        placements.append(AseAtomsAdaptor.get_structure(atoms))
    model = CHGNet.load()
    energy = np.array([p["e"] for p in model.predict_structure(placements, batch_size=32)])
    order = np.argsort(energy)
    print(f"{len(placements)} placements; lowest {energy[order[0]]:.4f}, next distinct ", end="")
    print(f"{next(e for e in energy[order] if e > energy[order[0]] + 1e-4):.4f} eV/atom (unrelaxed)")
    relaxed = StructOptimizer(model=model).relax(
        placements[int(order[0])], fmax=0.01, steps=1000, relax_cell=True, verbose=False
    )
    final = relaxed["final_structure"]
    print(f"relaxed: {float(relaxed['trajectory'].energies[-1]) / len(final):.4f} eV/atom")
    refined = SpacegroupAnalyzer(final, symprec=0.01).get_refined_structure()
    analyzer = SpacegroupAnalyzer(refined, symprec=0.01)
    symmetrized = analyzer.get_symmetrized_structure()
    print(
        analyzer.get_space_group_symbol(),
        "a, b, c =",
        np.round(refined.lattice.abc, 4),
        "angles =",
        np.round(refined.lattice.angles, 3),
    )
    for sites, wyckoff in zip(symmetrized.equivalent_sites, symmetrized.wyckoff_symbols, strict=True):
        print(sites[0].species_string, wyckoff, np.round(sites[0].frac_coords, 4))


if __name__ == "__main__":
    main()
