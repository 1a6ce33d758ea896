"""``atomdiff gb`` on a tiny untrained voxel model: the grains stay, the slabs are generated, energies are
computed for the builder's and the generated boundaries, and the files appear."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.diffusion.voxel import VoxelDiffusion
from atomdiff.models.voxel_unet import VoxelUNetConfig
from atomdiff.representations.voxel import VoxelGrid
from atomdiff.structure.grain_boundary import build_bicrystal
from atomdiff.structure.structure import Structure
from atomdiff.tasks.grain_boundary import assemble, boundary_mask


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = VoxelDiffusion(
        VoxelGrid(("Cu", "Zn"), (8, 8, 8), sigma=0.6),
        VoxelUNetConfig(channels=2, base=4, mults=(1, 2), time_dim=8, groups=2),
        np.eye(3) * 8.0,
    )
    folder = tmp_path_factory.mktemp("gb_model")
    model.save(folder)
    return folder


def test_boundary_mask_frees_slabs_around_both_planes():
    mask = boundary_mask((4, 4, 20), (0.0, 0.5), height=20.0, width=3.5)
    column = mask[0, 0].numpy()
    free = np.where(column == 0)[0]
    # voxels at c = k/20 of a 20 Å cell: within 3.5 Å of c = 0 (k = 0..3, 17..19) or of c = 0.5 (k = 7..13)
    assert set(free) == {0, 1, 2, 3, 17, 18, 19, 7, 8, 9, 10, 11, 12, 13}
    assert torch.all(mask == mask[0, 0])


def test_assemble_keeps_the_grains_and_takes_the_slabs_from_the_decoded_atoms():
    b = build_bicrystal("Cu", "fcc", 3.6, 5, (1, 0, 0), "twist")
    far = b.distance_to_boundary() > 2.0
    decoded = Structure(
        np.full(3, 30), np.array([[0.1, 0.2, 0.01], [0.3, 0.3, 0.5], [0.5, 0.5, 0.25]]), b.structure.cell
    )
    out = assemble(b, decoded, width=2.0, min_separation=0.5)
    grain = np.asarray(b.structure.frac)[far] % 1.0
    assert np.allclose(np.asarray(out.frac)[: far.sum()], grain)
    new = np.asarray(out.frac)[far.sum() :]
    assert len(new) <= 2 and not np.any(np.isclose(new[:, 2], 0.25))  # the atom mid-grain is not taken
    assert set(out.numbers) == {29}


def test_gb_command_writes_energies_structures_and_plot(model_dir, tmp_path):
    out = tmp_path / "gb"
    args = ["gb", "--element", "Cu", "--sigma", "5", "--plane", "1,0,0", "--kind", "twist", "-n", "2"]
    args += ["--steps", "2", "--potential", "emt", "--model", str(model_dir), "--model-lattice-constant", "3.6"]
    args += ["--shifts", "2", "--seed", "0", "-o", str(out)]
    assert run([*args, "--relax-steps", "20"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # builder: 2 × 2 rigid shifts, each with pymatgen's merging of close atoms and with every site kept
    assert len(summary["builder"]) == 8 and len(summary["generated"]) == 2
    assert {r["rm_ratio"] for r in summary["builder"]} == {0.7, 0.0}
    assert all(r["E_gb_J_m2"] > 0.3 for r in summary["builder"])
    assert summary["best_builder_E_gb"] == min(summary["best_builder_E_gb_by_rm_ratio"].values())
    # the samples cycle through the builder's boundaries: the kept grains are the shifted builder's
    assert [(r["shift"], r["rm_ratio"]) for r in summary["generated"]] == [([0.0, 0.0], 0.7), ([0.0, 0.0], 0.0)]
    in_plane = np.prod(summary["generation"]["in_plane"])
    assert all(r["atoms_per_cell"] == r["atoms"] / in_plane for r in summary["generated"])
    for name in ("energies.csv", "generated.extxyz", "builder.extxyz", "energy_vs_atoms.png"):
        assert (out / name).is_file()
    assert run([*args, "--relax-steps", "20"]) == 2  # results already there, no --overwrite


@pytest.mark.parametrize(
    "extra", [["--plane", "1,0"], ["--kind", "mixed"], ["--potential", "lj"], ["--start", "0"], ["--start", "1.5"]]
)
def test_gb_bad_options_exit_2(model_dir, tmp_path, extra):
    args = ["gb", "--element", "Cu", "--model", str(model_dir), "-n", "1", "--steps", "1", "-o", str(tmp_path / "o")]
    assert run([*args, *extra]) == 2


def test_builder_only_needs_no_model(tmp_path):
    out = tmp_path / "builder"
    args = ["gb", "--element", "Cu", "--sigma", "5", "--plane", "1,0,0", "--potential", "emt", "--builder-only"]
    assert run([*args, "--shifts", "1", "-o", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generated"] == [] and summary["model"] is None
    assert 0.3 < summary["best_builder_E_gb"] < 1.5
    assert not (out / "generated.extxyz").exists() and (out / "builder.extxyz").is_file()
