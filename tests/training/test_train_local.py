"""`atomdiff train amorphous|xanes` on a tiny data set: a run folder with checkpoints and an exported model that
loads and samples/predicts; resuming continues from the last checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.data.spectra import read_spectrum_dataset
from atomdiff.diffusion.amorphous import AmorphousDiffusion, SampleOptions
from atomdiff.models.xanes import XanesSurrogate
from atomdiff.physics.descriptors import min_distance
from atomdiff.structure import Structure, StructureBatch
from atomdiff.structure.io import write_structures
from atomdiff.training.lightning import NoiseLevelWeighting
from atomdiff.training.local import balance_by_density

TINY = [
    "--hidden",
    "8",
    "--layers",
    "1",
    "--batch-size",
    "2",
    "--cpu-threads",
    "1",
    "--set",
    "progress_bar=false",
    "--set",
    "ckpt_every=2",
    "--set",
    "warmup_steps=1",
]


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / "poscar" / split).mkdir(parents=True)
        (root / "xanes" / split).mkdir(parents=True)
        for k in range(3):
            s = Structure(np.full(16, 6), rng.random((16, 3)), np.eye(3) * (5.5 + 0.3 * k))
            write_structures([s], root / "poscar" / split / f"c{k}.vasp", format="poscar")
            np.savetxt(root / "xanes" / split / f"c{k}.txt", rng.random((16, 5)))
    return root


def test_train_amorphous_exports_a_prior_and_resumes(dataset, tmp_path):
    out = tmp_path / "prior"
    assert run(["train", "amorphous", "-d", str(dataset), "-o", str(out), "--max-steps", "2", *TINY]) == 0
    model = AmorphousDiffusion.load(out / "model")
    assert model.elements == [6] and model.densities[0] < model.densities[1]
    template = StructureBatch.from_structures(
        [Structure(np.full(10, 6), np.zeros((10, 3)), np.eye(3) * 5.0)], dtype=torch.float32
    )
    assert torch.isfinite(model.sample(template, SampleOptions(steps=2))).all()
    assert run(["train", "amorphous", "-o", str(out), "--resume", "--max-steps", "4"]) == 0
    assert json.loads((out / "model" / "config.json").read_text())["training"]["steps"] == 4


def test_train_xanes_exports_a_surrogate(dataset, tmp_path):
    out = tmp_path / "xanes"
    args = [
        "train",
        "xanes",
        "-d",
        str(dataset),
        "-o",
        str(out),
        "--max-steps",
        "2",
        "--absorber",
        "C",
        *TINY,
        "--set",
        "val_split=test",
    ]
    assert run(args) == 0
    model = XanesSurrogate.load(out / "model")
    assert model.n_bins == 5 and model.absorber == 6
    closest = min(min_distance(item.structure) for item in read_spectrum_dataset(dataset, "train", 6))
    assert closest > 0 and model.net_config.distance_floor == pytest.approx(0.75 * closest, abs=1e-3)
    batch = StructureBatch.from_structures(
        [Structure(np.full(4, 6), np.random.default_rng(1).random((4, 3)), np.eye(3) * 4.0)], dtype=torch.float32
    )
    with torch.no_grad():
        assert model(batch).shape == (1, 5)
    assert run(["train", "xanes", "-d", str(dataset), "-o", str(out), "--max-steps", "2"]) == 2  # refuses to overwrite


def test_weighted_balanced_run_fine_tuned_from_a_prior_resumes(dataset, tmp_path):
    first = tmp_path / "first"
    assert run(["train", "amorphous", "-d", str(dataset), "-o", str(first), "--max-steps", "2", *TINY]) == 0
    out = tmp_path / "tuned"
    extra = ["--set", "noise_weighting=true", "--set", "balance_density=true", "--set", f"init={first / 'model'}"]
    args = ["train", "amorphous", "-d", str(dataset), "-o", str(out), "--max-steps", "2", *TINY, *extra]
    assert run(args) == 0
    start = AmorphousDiffusion.load(first / "model").net.state_dict()
    tuned = AmorphousDiffusion.load(out / "model").net.state_dict()
    assert start.keys() == tuned.keys()  # the learned loss scale is not exported
    assert any(not torch.equal(start[k], tuned[k]) for k in start)
    record = json.loads((out / "model" / "config.json").read_text())["training"]
    assert record["init"]["model"] == str(first / "model")  # the model it started from, with that one's training
    assert record["init"]["training"]["steps"] == 2 and "init" not in record["init"]["training"]
    assert run(["train", "amorphous", "-o", str(out), "--resume", "--max-steps", "4"]) == 0
    assert json.loads((out / "model" / "config.json").read_text())["training"]["steps"] == 4


def test_noise_weighting_minimum_is_the_mean_loss_of_the_level():
    weighting = NoiseLevelWeighting(seed=0)
    sigma = torch.tensor([0.05, 2.5])
    target = torch.tensor([0.3, 30.0])  # mean loss at each level
    opt = torch.optim.Adam(weighting.parameters(), lr=0.05)
    for _ in range(600):
        u = weighting(sigma)
        loss = (target * torch.exp(-u) + u).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(torch.exp(weighting(sigma)).detach().numpy(), target.numpy(), rtol=0.02)


def test_balance_by_density_evens_out_densities():
    cells = [Structure(np.full(4, 6), np.zeros((4, 3)), np.eye(3) * a) for a in (4.0, 4.0, 4.0, 4.0, 3.0, 3.5, 3.5)]
    counts = {}
    for s in balance_by_density(cells):
        counts[round(s.density, 3)] = counts.get(round(s.density, 3), 0) + 1
    assert sorted(counts.values()) == [4, 4, 4]
