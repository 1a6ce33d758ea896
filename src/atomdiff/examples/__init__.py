"""Example structures and patterns shipped with atomdiff.

- ``kesterite_Cu2ZnSnS4.cif``: kesterite Cu2ZnSnS4 (I-4), the showcase absorber.
- :func:`tin_sulfide` and :func:`sphalerite`: two of its secondary phases (SnS, ZnS), built in code.
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
