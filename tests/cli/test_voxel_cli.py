"""``atomdiff voxel generate``: CIFs written from a saved voxel model, reproducible by seed, bad options refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ase.build import bulk

from atomdiff.cli.main import run
from atomdiff.cli.voxel import parse_shape
from atomdiff.diffusion.voxel import VoxelDiffusion
from atomdiff.errors import InputError
from atomdiff.models.voxel_unet import VoxelUNetConfig
from atomdiff.representations.voxel import VoxelGrid
from atomdiff.structure import Structure


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained tiny voxel model on an 8³ grid in the cubic cell of fcc Cu."""
    torch.manual_seed(0)
    cell = Structure.from_ase(bulk("Cu", "fcc", a=3.61, cubic=True)).cell
    config = VoxelUNetConfig(channels=1, base=4, mults=(1, 2), time_dim=8, groups=2)
    folder = tmp_path_factory.mktemp("voxel_model")
    VoxelDiffusion(VoxelGrid(("Cu",), (8, 8, 8)), config, cell).save(folder)
    return folder


def test_generate_writes_cifs_reproducibly(model_dir, tmp_path):
    args = ["voxel", "generate", "--model", str(model_dir), "-n", "1", "--steps", "2", "--seed", "3"]
    assert run([*args, "-o", str(tmp_path / "a")]) == 0
    assert run([*args, "-o", str(tmp_path / "b")]) == 0
    cifs = sorted((tmp_path / "a").glob("*.cif"))
    assert len(cifs) == 1
    assert [p.read_text() for p in cifs] == [p.read_text() for p in sorted((tmp_path / "b").glob("*.cif"))]
    assert (tmp_path / "a" / "summary.csv").is_file()


@pytest.mark.parametrize(
    "extra",
    [["--shape", "8,8,7"], ["--shape", "8,a"], ["--sampler", "euler"], ["--model", "/nonexistent"], ["--phase", "fcc"]],
)
def test_bad_options_exit_2(model_dir, tmp_path, extra):
    args = ["voxel", "generate", "--model", str(model_dir), "-n", "1", "--steps", "1", "-o", str(tmp_path / "o")]
    assert run([*args, *extra]) == 2


def test_parse_shape():
    assert parse_shape("16") == (16, 16, 16)
    assert parse_shape("16,16,32") == (16, 16, 32)
    assert parse_shape(None) is None
    for bad in ("16,16", "16x16x16", "0"):
        with pytest.raises(InputError, match="--shape"):
            parse_shape(bad)
