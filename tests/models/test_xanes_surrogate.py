"""The XANES surrogate: per-atom spectra that are invariant to rotations, translations and permutations,
a structure spectrum that is the mean over absorbers, a training loss that goes down, and safetensors I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.errors import InputError
from atomdiff.models.local import LocalNetConfig
from atomdiff.models.xanes import LabelledBatch, XanesSurrogate
from atomdiff.structure import Structure, StructureBatch
from atomdiff.testing import assert_symmetric, permute, rotate, shift


def _surrogate(n_bins: int = 6) -> XanesSurrogate:
    torch.manual_seed(0)
    mean = np.linspace(0.0, 1.0, n_bins).tolist()
    std = np.full(n_bins, 0.5).tolist()
    return XanesSurrogate(LocalNetConfig(hidden=16, layers=2, cutoff=3.0), n_bins, 6, mean, std).double().eval()


def _cell(seed: int, n: int = 16) -> Structure:
    rng = np.random.default_rng(seed)
    return Structure(rng.choice([6, 7], n), rng.random((n, 3)), np.diag([5.0, 5.5, 6.0]) + rng.normal(0, 0.3, (3, 3)))


def test_per_atom_spectra_are_invariant():
    model = _surrogate()

    def fn(s: Structure) -> dict[str, np.ndarray]:
        batch = StructureBatch.from_structures([s])
        with torch.no_grad():
            return {"spectra": model._normalised(batch).numpy(), "mean": model(batch).numpy()}

    s = _cell(0)
    assert_symmetric(fn, s, {"spectra": "atom_invariant", "mean": "invariant"}, (rotate, shift, permute))


def test_structure_spectrum_is_the_mean_over_absorbers():
    model = _surrogate()
    s = _cell(1)
    batch = StructureBatch.from_structures([s, _cell(2)])
    with torch.no_grad():
        idx, per_atom = model.per_atom(batch)
        mean = model(batch)
    first = batch.batch_idx[idx] == 0
    np.testing.assert_allclose(mean[0].numpy(), per_atom[first].mean(0).numpy(), rtol=1e-12)
    assert bool((batch.numbers[idx] == 6).all())


def test_a_structure_without_the_absorber_is_an_error():
    model = _surrogate()
    s = Structure(np.full(4, 14), np.random.default_rng(0).random((4, 3)), np.eye(3) * 5)
    with pytest.raises(InputError, match="absorbing"):
        model(StructureBatch.from_structures([s]))


def test_training_lowers_the_loss_and_weights_round_trip(tmp_path):
    model = _surrogate().float().train()
    s = _cell(3)
    batch = StructureBatch.from_structures([s], dtype=torch.float32)
    absorbers = torch.nonzero(batch.numbers == 6).squeeze(-1)
    dist = torch.linalg.norm(batch.cart[absorbers] - batch.cart[absorbers].mean(0), dim=-1, keepdim=True)
    spectra = torch.sin(dist * torch.arange(1, 7, dtype=torch.float32))  # a smooth function of the environment
    labelled = LabelledBatch(batch, absorbers, spectra)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = float(model.loss(labelled)["loss"].detach())
    for _ in range(80):
        loss = model.loss(labelled)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.loss(labelled)["loss"].detach()) < 0.5 * first
    model.eval().save(tmp_path / "s")
    loaded = XanesSurrogate.load(tmp_path / "s")
    with torch.no_grad():
        assert torch.allclose(model(batch), loaded(batch), atol=1e-6)
    assert loaded.absorber == 6 and loaded.n_bins == 6


def test_match_area_rescales_to_the_training_mean():
    model = _surrogate()
    y = np.array([0.0, 1.0, 2.0, 1.0, 0.0, 0.0])
    out = model.match_area(y)
    assert out.sum() == pytest.approx(float(model.mean.sum()))
    np.testing.assert_allclose(out / out.max(), y / y.max())
    with pytest.raises(InputError, match="positive area"):
        model.match_area(np.zeros(6))
