"""Example structures and patterns shipped with atomdiff.

- ``kesterite_Cu2ZnSnS4.cif``: kesterite Cu2ZnSnS4 (I-4), the showcase absorber.
- ``kesterite_CuKa.xye``: its simulated lab pattern (Cu Kα1+Kα2, 2θ 10–80°, Poisson counts over a sloping
  background), made with::

      atomdiff simulate xrd kesterite_Cu2ZnSnS4.cif -o kesterite_CuKa.xye --wavelength CuKa --start 10 --stop 80 \
          --step 0.02 --u 0.004 --v -0.002 --w 0.003 --eta 0.45 --zero-shift 0.02 --biso 0.6 \
          --background 200,-60,20 --counts 20000 --seed 7
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def example_path(name: str) -> Path:
    """Path of a bundled example file, e.g. ``example_path("kesterite_Cu2ZnSnS4.cif")``."""
    return Path(str(files("atomdiff.examples") / name))
