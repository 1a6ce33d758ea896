"""Shared fixtures: seeding, the shared datasets (skipped with a reason when absent), small structures."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ATOMDIFF_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (set ATOMDIFF_SHARED_DATA to their folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def czts():
    """``czts(ordering, primitive=False)``: Cu2ZnSnS4 as kesterite (I-4: Cu 2a, Cu 2c, Zn 2d, Sn 2b, S 8g) or
    stannite (I-42m: Zn 2a, Sn 2b, Cu 4d, S 8i), the conventional 16-atom cell or the primitive 8-atom one."""
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    from atomdiff.structure import Structure

    def build(ordering: str, primitive: bool = False) -> Structure:
        lattice = Lattice.tetragonal(5.427, 10.871)
        if ordering == "kesterite":
            sites = [[0, 0, 0], [0, 0.5, 0.25], [0, 0.5, 0.75], [0, 0, 0.5], [0.2434, 0.756, 0.1278]]
            pm = PmgStructure.from_spacegroup("I-4", lattice, ["Cu", "Cu", "Zn", "Sn", "S"], sites)
        elif ordering == "stannite":
            sites = [[0, 0, 0], [0, 0, 0.5], [0, 0.5, 0.25], [0.2434, 0.2434, 0.1278]]
            pm = PmgStructure.from_spacegroup("I-42m", lattice, ["Zn", "Sn", "Cu", "S"], sites)
        else:
            raise ValueError(ordering)
        return Structure.from_pymatgen(pm.get_primitive_structure() if primitive else pm)

    return build
