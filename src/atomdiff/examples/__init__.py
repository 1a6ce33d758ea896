"""Example structures and patterns shipped with atomdiff.

- ``kesterite_Cu2ZnSnS4.cif``: kesterite Cu2ZnSnS4 (I-4), the showcase absorber.
- :func:`tin_sulfide`, :func:`sphalerite` and :func:`mohite`: its secondary phases SnS, ZnS and Cu2SnS3, built
  in code.
- ``kesterite_CuKa.xye``: its simulated lab pattern (Cu Kα1+Kα2, 2θ 10–80°, Poisson counts over a sloping
  background), made with::

      atomdiff simulate xrd kesterite_Cu2ZnSnS4.cif -o kesterite_CuKa.xye --wavelength CuKa --start 10 --stop 80 \
          --step 0.02 --u 0.004 --v -0.002 --w 0.003 --eta 0.45 --zero-shift 0.02 --biso 0.6 \
          --background 200,-60,20 --counts 20000 --seed 7
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np

from atomdiff.structure.structure import Structure


def example_path(name: str) -> Path:
    """Path of a bundled example file, e.g. ``example_path("kesterite_Cu2ZnSnS4.cif")``."""
    return Path(str(files("atomdiff.examples") / name))


def tin_sulfide() -> Structure:
    """Herzenbergite SnS, Pnma, a, b, c = 11.20, 3.99, 4.33 Å (Sn 4c 0.1194 ¼ 0.1198; S 4c 0.8508 ¼ 0.4793)."""
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PymatgenStructure

    lattice = Lattice.orthorhombic(11.20, 3.99, 4.33)
    coords = [[0.1194, 0.25, 0.1198], [0.8508, 0.25, 0.4793]]
    return Structure.from_pymatgen(PymatgenStructure.from_spacegroup("Pnma", lattice, ["Sn", "S"], coords))


def sphalerite() -> Structure:
    """Zinc-blende ZnS, a = 5.409 Å."""
    fcc = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return Structure([30] * 4 + [16] * 4, np.vstack([fcc, fcc + 0.25]), np.eye(3) * 5.409)


def mohite() -> Structure:
    """Monoclinic Cu2SnS3 (Cc, 24 atoms), the stable form of the ternary secondary phase of kesterite.

    Its coordinates are not in any package atomdiff depends on, so they were computed
    (``benchmarks/mohite_orderings.py``): the cell is the sphalerite superstructure the published structure has
    (a = ½[1 1 2], b = 3/2[1 −1 0], c = ½[1 1 −2] of cubic ZnS, 12 cation sites), every one of the 495
    placements of 4 Sn and 8 Cu on its cation sites was scored with CHGNet (0.3.0, single points at a = 5.43 Å),
    and the lowest (6.5 meV/atom below the next placement) relaxed with CHGNet (cell free, fmax 0.01 eV/Å) is Cc
    with a, b, c = 6.682, 11.589, 6.692 Å, β = 109.30°, within 0.5 % of the published cell of mohite (a, b, c =
    6.653, 11.537, 6.665 Å, β = 109.39°; Onoda et al., Mater. Res. Bull. 35, 1563 (2000)). Listed here: its
    six 4a sites (refined to Cc within 0.01 Å) in the published cell — the cell decides where the lines are,
    and CHGNet's 0.5 % would split the lines mohite shares with kesterite (pseudo-cubic a = 5.438 against
    kesterite's 5.427 and c/2 = 5.435 Å) further than a real sample does."""
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PymatgenStructure

    lattice = Lattice.monoclinic(6.653, 11.537, 6.665, 109.39)
    species = ["Cu", "Cu", "Sn", "S", "S", "S"]
    coords = [
        [0.5886, 0.2449, 0.4971],
        [0.5722, 0.9169, 0.4942],
        [0.0916, 0.0896, 0.5099],
        [0.9516, 0.2605, 0.6332],
        [0.4427, 0.4056, 0.6090],
        [0.4783, 0.0828, 0.6316],
    ]
    return Structure.from_pymatgen(PymatgenStructure.from_spacegroup("Cc", lattice, species, coords))
