"""The local equivariant network: rotating (and reflecting) the structure rotates the vector output, and
translations with wrap-around, permutations and another choice of cell basis change nothing else; the cost
is local (atoms beyond the receptive field do not matter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atomdiff.models.local import Graph, LocalEquivariantNet, LocalNetConfig
from atomdiff.physics.descriptors import min_distance
from atomdiff.structure import Structure, StructureBatch
from atomdiff.testing import assert_symmetric, permute, rotate, shift
from atomdiff.testing.symmetry import change_basis


def _net(**kw) -> LocalEquivariantNet:
    torch.manual_seed(0)
    config = LocalNetConfig(hidden=16, layers=2, cutoff=3.0, n_cond=2, out_scalars=4, out_vector=True, **kw)
    return LocalEquivariantNet(config).double().eval()


def _outputs(net: LocalEquivariantNet):
    def fn(s: Structure) -> dict[str, np.ndarray]:
        b = StructureBatch.from_structures([s])
        graph = Graph.build(b, b.cart, net.config.cutoff)
        cond = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
        with torch.no_grad():
            vec, scal = net(b.numbers, b.cart, graph, b.batch_idx, cond)
        return {"vector": vec.numpy(), "scalars": scal.numpy()}

    return fn


def _random_cell(seed: int, n: int) -> Structure:
    rng = np.random.default_rng(seed)
    cell = np.diag([5.0, 5.5, 6.0]) + rng.normal(0, 0.5, (3, 3))
    return Structure(rng.choice([6, 14], n), rng.random((n, 3)), cell)


@pytest.mark.parametrize("seed,n", [(0, 6), (1, 20)])
def test_local_net_symmetries(seed, n):
    kinds = {"vector": "atom_vector", "scalars": "atom_invariant"}
    transforms = (rotate, shift, permute, change_basis)
    assert_symmetric(_outputs(_net()), _random_cell(seed, n), kinds, transforms, seed=seed)


def test_local_net_outputs_depend_on_geometry_and_are_nonzero():
    fn = _outputs(_net())
    a, b = fn(_random_cell(0, 6)), fn(_random_cell(3, 6))
    assert np.abs(a["vector"]).max() > 1e-6
    assert not np.allclose(a["scalars"], b["scalars"])


def test_local_net_is_local():
    """Moving an atom further away than layers × cutoff from atom 0 leaves atom 0's outputs unchanged."""
    net = _net()
    rng = np.random.default_rng(5)
    cell = np.eye(3) * 20.0
    cart = np.concatenate([rng.random((8, 3)) * 3.0, [[12.0, 12.0, 12.0]]])
    s = Structure(np.full(9, 6), cart / 20.0, cell)
    moved = s.replace(frac=np.vstack([s.frac[:-1], [[13.0 / 20, 12.5 / 20, 12.0 / 20]]]))
    fn = _outputs(net)
    a, b = fn(s), fn(moved)
    np.testing.assert_allclose(a["vector"][:-1], b["vector"][:-1], atol=1e-12)
    np.testing.assert_allclose(a["scalars"][:-1], b["scalars"][:-1], atol=1e-12)


def test_recomputed_messages_give_the_same_gradients(monkeypatch):
    """Large graphs recompute messages in the backward pass; the gradient must not change."""
    import atomdiff.models.local as local

    net = _net()
    s = _random_cell(4, 20)
    b = StructureBatch.from_structures([s])
    cond = torch.tensor([[0.1, 0.2]], dtype=torch.float64)

    params = list(net.parameters())

    def grad() -> list[np.ndarray]:
        cart = b.cart.clone().requires_grad_(True)
        vec, scal = net(b.numbers, cart, Graph.build(b, cart, net.config.cutoff), b.batch_idx, cond)
        grads = torch.autograd.grad((vec**2).sum() + scal.sum(), [cart, *params], allow_unused=True)
        return [g.numpy() for g in grads if g is not None]

    plain = grad()
    monkeypatch.setattr(local, "_RECOMPUTE_EDGES", 0)
    monkeypatch.setattr(local, "_EDGE_CHUNK", 7)  # many chunks too
    recomputed = grad()
    assert len(recomputed) == len(plain) > 10  # positions and the parameters, the filters' included
    for a, b_ in zip(recomputed, plain, strict=True):
        np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-12)


def test_distance_floor_changes_only_pairs_closer_than_it():
    """Pairs at or beyond the floor give the same outputs, closer pairs are seen at the floor."""
    far = _random_cell(1, 4)
    assert min_distance(far) > 1.0
    plain, floored = _outputs(_net()), _outputs(_net(distance_floor=1.0))
    for key, value in plain(far).items():
        np.testing.assert_array_equal(value, floored(far)[key])
    near = _random_cell(0, 6)
    assert min_distance(near) < 1.0
    assert not np.allclose(plain(near)["scalars"], floored(near)["scalars"])
