"""The crystal score network respects rotations (with reflections), translations with wrap-around and
permutations, numerically, on random structures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
from atomdiff.models.crystal import CrystalNetConfig
from atomdiff.structure import Structure, StructureBatch
from atomdiff.testing import assert_symmetric, permute, rotate, shift


def _model(cond_dim: int = 0) -> CrystalDiffusion:
    torch.manual_seed(0)
    model = CrystalDiffusion(CrystalNetConfig(hidden=32, layers=2, cond_dim=cond_dim), DataStatistics())
    return model.double().eval()


def _random_structure(seed: int, n: int) -> Structure:
    rng = np.random.default_rng(seed)
    cell = np.diag([4.0, 4.5, 5.5]) + rng.normal(0, 0.6, (3, 3))
    return Structure(rng.integers(1, 60, n), rng.random((n, 3)), cell)


def _outputs(model: CrystalDiffusion, t: float = 0.4):
    def fn(s: Structure) -> dict[str, np.ndarray]:
        b = StructureBatch.from_structures([s])
        x = model.lattice_noise.encode(b.cell, b.n_atoms)
        gram = model.lattice_noise.gram(x, b.n_atoms)
        with torch.no_grad():
            frac, eps, logits = model.net(
                b.numbers, b.frac, x, gram, b.batch_idx, torch.tensor([t], dtype=torch.float64)
            )
        return {"frac_score": frac.numpy(), "lattice_eps": eps.numpy()[0], "logits": logits.numpy()}

    return fn


@pytest.mark.parametrize("seed,n", [(0, 1), (1, 5), (2, 12)])
def test_score_network_symmetries(seed, n):
    kinds = {"frac_score": "atom_invariant", "lattice_eps": "invariant", "logits": "atom_invariant"}
    assert_symmetric(_outputs(_model()), _random_structure(seed, n), kinds, (rotate, shift, permute), seed=seed)


def test_outputs_depend_on_the_structure():
    fn = _outputs(_model())
    a, b = fn(_random_structure(0, 5)), fn(_random_structure(1, 5))
    assert not np.allclose(a["frac_score"], b["frac_score"])


def test_batched_equals_single():
    model = _model()
    structures = [_random_structure(k, n) for k, n in enumerate((3, 7, 1))]
    b = StructureBatch.from_structures(structures)
    x = model.lattice_noise.encode(b.cell, b.n_atoms)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    with torch.no_grad():
        frac, eps, _ = model.net(b.numbers, b.frac, x, model.lattice_noise.gram(x, b.n_atoms), b.batch_idx, t)
    for k, s in enumerate(structures):
        single = _outputs(model, float(t[k]))(s)
        np.testing.assert_allclose(frac[b.batch_idx == k].numpy(), single["frac_score"], atol=1e-10)
        np.testing.assert_allclose(eps[k].numpy(), single["lattice_eps"], atol=1e-10)


def test_loss_backpropagates_and_save_load_round_trip(tmp_path):
    structures = [_random_structure(k, 4) for k in range(6)]
    model = CrystalDiffusion(CrystalNetConfig(hidden=16, layers=1), DataStatistics.from_structures(structures))
    losses = model.loss(StructureBatch.from_structures(structures), generator=torch.Generator().manual_seed(0))
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    model.save(tmp_path / "m")
    loaded = CrystalDiffusion.load(tmp_path / "m")
    a = model.eval().sample(2, steps=3, seed=5)
    b = loaded.sample(2, steps=3, seed=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_allclose(x.frac, y.frac)
        np.testing.assert_allclose(x.cell, y.cell)
