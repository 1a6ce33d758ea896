"""``atomdiff voxel train``: a tiny run exports a model that ``voxel generate`` samples; resume; one box only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from atomdiff.cli.main import run
from atomdiff.data.generate.ordered import write_ordered_dataset
from atomdiff.diffusion.voxel import VoxelDiffusion
from atomdiff.errors import InputError
from atomdiff.weights import DEFAULT_VOXEL_MODEL, load_voxel_model, shipped_models

TINY = ["--grid", "8", "--sigma", "0.8", "--base", "4", "--mults", "1,2", "--batch-size", "2", "--cpu-threads", "1"]
QUIET = ["--accelerator", "cpu", "--set", "progress_bar=false", "--set", "time_dim=8", "--set", "blocks=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ordered") / "ordered.extxyz"
    write_ordered_dataset(path, per_phase=2, seed=0, phases=["fcc", "CsCl"])
    return path


def _steps(model: Path) -> int:
    return json.loads((model / "config.json").read_text())["training"]["steps"]


def test_train_generate_and_resume(data, tmp_path):
    out = tmp_path / "run"
    args = ["voxel", "train", "-d", str(data), "-o", str(out), *TINY, *QUIET]
    assert run([*args, "--max-steps", "2", "--seed", "1"]) == 0
    model = out / "model"
    assert _steps(model) == 2
    loaded = VoxelDiffusion.load(model)
    assert loaded.grid.shape == (8, 8, 8) and loaded.grid.symbols == ["Cu", "Zn"]
    assert np.allclose(loaded.cell, np.eye(3) * 12.0)

    samples = tmp_path / "samples"
    assert run(["voxel", "generate", "--model", str(model), "-n", "1", "--steps", "2", "-o", str(samples)]) == 0
    assert len(list(samples.glob("*.cif"))) == 1

    assert run([*args, "--max-steps", "2"]) == 2  # refuses to start over a run with checkpoints
    assert run([*args, "--max-steps", "3", "--resume"]) == 0
    assert _steps(model) == 3

    tuned = tmp_path / "tuned"
    init = ["--set", f"init={model}", "--set", "prediction=v"]
    assert run(["voxel", "train", "-d", str(data), "-o", str(tuned), *init, *QUIET, "--max-steps", "1"]) == 0
    fine = VoxelDiffusion.load(tuned / "model")
    assert fine.noise.prediction == "v" and fine.grid.shape == (8, 8, 8)  # the init model's grid, not the default


def test_structures_in_different_boxes_are_refused(tmp_path):
    path = tmp_path / "two_boxes.extxyz"
    write(path, [bulk("Cu", "fcc", a=3.6, cubic=True), bulk("Cu", "fcc", a=3.7, cubic=True)], format="extxyz")
    out = tmp_path / "run"
    assert run(["voxel", "train", "-d", str(path), "-o", str(out), "--max-steps", "1", *TINY, *QUIET]) == 2
    assert not (out / "model").exists()


def test_default_model_missing_is_a_clear_error(tmp_path, monkeypatch):
    import atomdiff.weights

    assert DEFAULT_VOXEL_MODEL in shipped_models("voxel_diffusion")
    monkeypatch.setattr(atomdiff.weights, "DEFAULT_VOXEL_MODEL", "voxel_not_installed")  # a stripped install
    with pytest.raises(InputError, match="shipped voxel models: .*voxel_ordered"):
        load_voxel_model(None)
    assert run(["voxel", "generate", "-n", "1", "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_a_phase_conditioned_run_learns_the_labels_and_generates_requested_phases(data, tmp_path):
    out = tmp_path / "run"
    args = ["voxel", "train", "-d", str(data), "-o", str(out), *TINY, *QUIET, "--set", "condition=phase"]
    assert run([*args, "--max-steps", "2", "--seed", "1"]) == 0
    model = VoxelDiffusion.load(out / "model")
    assert model.classes == ("CsCl", "fcc")
    # the cached parse keeps the labels: a resumed run reads the cache
    assert run([*args, "--max-steps", "3", "--resume"]) == 0
    assert VoxelDiffusion.load(out / "model").classes == ("CsCl", "fcc")

    samples = tmp_path / "samples"
    gen = ["voxel", "generate", "--model", str(out / "model"), "-n", "3", "--steps", "2", "-o"]
    assert run([*gen, str(samples), "--phase", "fcc", "--guidance", "2"]) == 0
    assert len(list(samples.glob("*.cif"))) == 3
    assert run([*gen, str(tmp_path / "all")]) == 0  # default: cycle through the model's classes
    assert run([*gen, str(tmp_path / "any"), "--phase", "any"]) == 0
    assert run([*gen, str(tmp_path / "bad"), "--phase", "hcp"]) == 2
    assert not (tmp_path / "bad").exists()
    assert run([*gen, str(tmp_path / "window"), "--guidance", "2", "--guidance-interval", "0.2,0.8"]) == 0
    for bad in ("0.8,0.2", "0.5", "a,b"):
        assert run([*gen, str(tmp_path / "bad"), "--guidance", "2", "--guidance-interval", bad]) == 2
        assert not (tmp_path / "bad").exists()


def test_a_condition_the_data_lacks_is_named(data, tmp_path):
    out = tmp_path / "run"
    args = ["voxel", "train", "-d", str(data), "-o", str(out), *TINY, *QUIET, "--max-steps", "1"]
    assert run([*args, "--set", "condition=colour"]) == 2
    assert not (out / "model").exists()
    with pytest.raises(InputError, match="label_dropout"):
        from atomdiff.training.config import VoxelTrainConfig

        VoxelTrainConfig(data=[str(data)], label_dropout=1.0).validate()
