"""The shipped boundary-specific voxel model (W Σ5(100) twist grains) loads and restores its grains."""

from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import torch

from atomdiff.data.generate.grains import grain_structures
from atomdiff.physics.ordering import classify
from atomdiff.structure.grain_boundary import build_bicrystal
from atomdiff.structure.structure import Structure
from atomdiff.weights import load_voxel_model, shipped_models


def test_shipped_w_twist_model_restores_a_noised_grain_with_every_atom():
    assert "voxel_W_s5_twist" in shipped_models("voxel_diffusion")
    model = load_voxel_model("voxel_W_s5_twist")
    assert model.grid.species == (74,)
    config = json.loads((files("atomdiff.weights") / "voxel_W_s5_twist" / "config.json").read_text())
    assert config["training"]["steps"] > 0 and config["training"]["wall_time_s"] > 0
    grain = Structure.from_ase(
        grain_structures(build_bicrystal("W", "bcc", 3.0, 5, (1, 0, 0), "twist", in_plane=(3, 3)), 2, seed=4)[1]
    )
    assert np.allclose(grain.cell, model.cell)
    known = model.grid.encode(grain)
    # noise the whole box to ᾱ ≈ 0.65, then denoise it: the model must put every atom back on its lattice
    field = model.inpaint(known, torch.zeros(known.shape[1:]), 1, 15, torch.Generator().manual_seed(0), start=0.35)
    decoded = model.grid.decode(field[0], grain.cell)
    assert len(decoded) == len(grain) == 360
    phase = classify(decoded)
    assert phase.perfect and phase.phase == "bcc"
