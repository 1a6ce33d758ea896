"""A tiny voxel diffusion model: it trains (the loss drops), samples reproducibly from a seed, and its samples
decode into structures whose atom count the decoder finds (zero included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.geometry import get_distances
from torch import nn

from atomdiff.diffusion.noise.voxel import VoxelNoise
from atomdiff.diffusion.voxel import VoxelBatch, VoxelDiffusion
from atomdiff.errors import InputError
from atomdiff.models.voxel_unet import VoxelUNetConfig
from atomdiff.representations.voxel import VoxelGrid
from atomdiff.structure.structure import Structure

FCC = Structure.from_ase(bulk("Cu", "fcc", a=3.61, cubic=True))


def _model(prediction: str = "eps") -> VoxelDiffusion:
    torch.manual_seed(0)
    grid = VoxelGrid(("Cu",), (16, 16, 16), sigma=0.3)
    config = VoxelUNetConfig(channels=1, base=8, mults=(1, 2), time_dim=16, groups=4)
    return VoxelDiffusion(grid, config, FCC.cell, VoxelNoise(prediction=prediction))


def _fields(model: VoxelDiffusion, n: int = 4, seed: int = 0) -> torch.Tensor:
    """fcc Cu translated at random (the data a periodic model should learn)."""
    rng = np.random.default_rng(seed)
    shifted = [FCC.replace(frac=FCC.frac + rng.random(3)) for _ in range(n)]
    return model.grid.encode_batch(shifted)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_lowers_the_loss(prediction):
    model = _model(prediction)
    fields = _fields(model, n=2)

    def fixed_loss() -> float:  # same times and noise every time, at 16 times
        with torch.no_grad():
            return model.loss(fields.repeat(8, 1, 1, 1, 1), torch.Generator().manual_seed(123))["loss"].item()

    before = fixed_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        opt.zero_grad()
        model.loss(fields, gen)["loss"].backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.95 * before


def test_sampling_is_reproducible_from_a_seed():
    model = _model().eval()
    a = model.sample(2, steps=4, generator=torch.Generator().manual_seed(7))
    b = model.sample(2, steps=4, generator=torch.Generator().manual_seed(7))
    c = model.sample(2, steps=4, generator=torch.Generator().manual_seed(8))
    assert a.shape == (2, 1, 16, 16, 16)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0
    ddim = [model.sample(1, steps=3, generator=torch.Generator().manual_seed(1), sampler="ddim") for _ in range(2)]
    assert torch.equal(ddim[0], ddim[1])


class _Oracle(nn.Module):
    """The denoiser of a perfectly trained model on a one-field data set: the exact noise towards that field."""

    def __init__(self, model: VoxelDiffusion, field: torch.Tensor):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))
        self.factor = model.net.factor
        self.noise = model.noise
        self.x0 = model.noise.encode(field)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.noise.alpha_bar(t).to(x).view(-1, 1, 1, 1, 1)
        return (x - ab.sqrt() * self.x0.to(x)) / (1 - ab).sqrt()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampler_and_decoder_recover_the_data_with_an_exact_denoiser(sampler):
    """End to end: with the exact denoiser the sampler ends on the data field, and the decoder finds its atoms;
    on a grid twice as long the box doubles and so does the atom count."""
    model = _model().eval()
    shifted = FCC.replace(frac=FCC.frac + 0.1)
    model.net = _Oracle(model, model.grid.encode(shifted)[None])
    calls = []
    out = model.generate_structures(
        2, steps=5, generator=torch.Generator().manual_seed(0), progress=lambda *a: calls.append(a), sampler=sampler
    )
    assert calls == [(k, 5) for k in range(1, 6)]
    for s in out:
        assert isinstance(s, Structure) and len(s) == 4 and set(s.numbers.tolist()) == {29}
        d = get_distances(s.cart, shifted.cart, cell=FCC.cell, pbc=True)[1]
        assert d.min(axis=1).max() < 0.05
    double = shifted.repeat((2, 1, 1))
    model.net = _Oracle(model, VoxelGrid(("Cu",), (32, 16, 16)).encode(double)[None])
    big = model.generate_structures(1, shape=(32, 16, 16), steps=5, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(big[0].cell, double.cell)
    assert len(big[0]) == 8


def test_untrained_samples_decode_and_zero_atoms_is_clean():
    model = _model().eval()
    gen = torch.Generator().manual_seed(0)
    noisy = model.generate_structures(1, steps=2, generator=gen, max_iter=10, max_rounds=1)
    assert isinstance(noisy[0], Structure)
    empty = model.generate_structures(2, steps=2, generator=gen, peak_threshold=1e6)
    assert [len(s) for s in empty] == [0, 0]
    assert all(s.frac.shape == (0, 3) for s in empty)
    assert model.sample(0, steps=2).shape == (0, 1, 16, 16, 16)


def test_save_and_load(tmp_path):
    model = _model().eval()
    model.save(tmp_path / "voxel")
    loaded = VoxelDiffusion.load(tmp_path / "voxel")
    assert loaded.grid == model.grid
    np.testing.assert_allclose(loaded.cell, model.cell)
    a = model.sample(1, steps=2, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(1, steps=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)


def test_errors_name_the_parameter():
    model = _model()
    with pytest.raises(InputError, match="shape"):
        model.sample(1, shape=(16, 16, 15), steps=1)
    with pytest.raises(InputError, match="sampler"):
        model.sample(1, steps=1, sampler="euler")
    with pytest.raises(InputError, match="fields"):
        model.loss(torch.zeros(1, 2, 16, 16, 16))
    with pytest.raises(InputError, match="net_config"):
        VoxelDiffusion(model.grid, VoxelUNetConfig(channels=2))


@pytest.mark.parametrize("resample", [1, 2])
def test_inpainting_keeps_the_known_voxels_and_is_reproducible(resample):
    model = _model().eval()
    known = _fields(model, n=1)[0]
    mask = torch.zeros(known.shape[1:])
    mask[:, :, :8] = 1.0
    run = [
        model.inpaint(known, mask, n=2, steps=3, generator=torch.Generator().manual_seed(5), resample=resample)
        for _ in range(2)
    ]
    assert torch.equal(run[0], run[1])
    assert run[0].shape == (2, *known.shape)
    assert torch.allclose(run[0][:, :, :, :, :8], known[None, :, :, :, :8].expand(2, -1, -1, -1, -1), atol=1e-5)
    assert not torch.allclose(run[0][0, :, :, :, 8:], known[:, :, :, 8:], atol=1e-2)  # generated, not copied


def test_inpainting_from_a_late_start_is_a_variation_of_the_known_field():
    model = _model().eval()
    known = _fields(model, n=1)[0]
    mask = torch.zeros(known.shape[1:])
    mask[:, :, :8] = 1.0

    def error(start):
        out = model.inpaint(known, mask, n=2, steps=4, generator=torch.Generator().manual_seed(1), start=start)
        return (out[:, :, :, :, 8:] - known[None, :, :, :, 8:]).abs().mean().item()

    # the untrained network cannot restore the field, so the distance to it measures how much noise went in
    assert error(0.02) < 0.2 * error(1.0)
    assert error(0.02) < error(0.3) < error(1.0)
    with pytest.raises(InputError, match="start"):
        model.inpaint(known, mask, steps=1, start=0.0)


def test_inpainting_rejects_bad_masks():
    model = _model().eval()
    known = _fields(model, n=1)[0]
    with pytest.raises(InputError, match="mask"):
        model.inpaint(known, torch.ones(8, 8, 8), steps=1)
    with pytest.raises(InputError, match="known"):
        model.inpaint(known[0], torch.ones(16, 16, 16), steps=1)


def test_occupied_weighting_changes_the_loss_but_not_its_scale_on_uniform_error():
    model = _model()
    fields = _fields(model, n=2)
    plain = model.loss(fields, torch.Generator().manual_seed(0))["loss"]
    model.occupied_weight = 10.0
    weighted = model.loss(fields, torch.Generator().manual_seed(0))["loss"]
    assert torch.isfinite(weighted) and not torch.isclose(plain, weighted)
    noise = model.noise
    x0 = torch.zeros(1, 1, 4, 4, 4)
    eps = torch.ones_like(x0)
    w = torch.rand(1, 1, 4, 4, 4) + 0.5
    w = w / w.mean()
    t = torch.full((1,), 0.5, dtype=torch.float64)
    out = noise.target(x0, eps, t).float() + 1.0  # the same error everywhere
    assert torch.isclose(noise.loss(out, x0, eps, t, w), noise.loss(out, x0, eps, t))


def _conditional_model() -> VoxelDiffusion:
    torch.manual_seed(0)
    grid = VoxelGrid(("Cu",), (8, 8, 8), sigma=0.5)
    config = VoxelUNetConfig(channels=1, base=4, mults=(1, 2), time_dim=8, groups=2, classes=("fcc", "bcc"))
    model = VoxelDiffusion(grid, config, FCC.cell, VoxelNoise(prediction="v"))
    nn.init.normal_(model.net.label.weight)
    return model.eval()


def test_class_conditioned_loss_sampling_guidance_and_persistence(tmp_path):
    model = _conditional_model()
    fields = model.grid.encode_batch([FCC, FCC])
    batch = VoxelBatch(fields, torch.tensor([0, 1]))
    assert len(batch) == 2
    assert torch.isfinite(model.loss(batch, torch.Generator().manual_seed(0))["loss"])
    with pytest.raises(InputError, match="class-conditioned"):
        model.loss(fields)

    def sample(labels, guidance=1.0):
        return model.sample(2, steps=3, generator=torch.Generator().manual_seed(5), labels=labels, guidance=guidance)

    fcc = sample("fcc")
    assert torch.equal(fcc, sample([0, 0]))  # names and indices are the same request
    assert not torch.equal(fcc, sample("bcc"))
    assert not torch.equal(fcc, sample(None))  # unconditional: the "no class" label
    assert not torch.equal(fcc, sample("fcc", guidance=3.0))
    with pytest.raises(InputError, match="it knows fcc, bcc"):
        sample("hcp")
    with pytest.raises(InputError, match="one per sample"):
        sample(["fcc"])

    model.save(tmp_path / "m")
    loaded = VoxelDiffusion.load(tmp_path / "m")
    assert loaded.classes == ("fcc", "bcc")
    assert torch.equal(fcc, loaded.sample(2, steps=3, generator=torch.Generator().manual_seed(5), labels="fcc"))
    with pytest.raises(InputError, match="without class labels"):
        _model().sample(1, steps=1, labels="fcc")


def test_guidance_interval_guides_only_inside_it():
    model = _conditional_model()

    def sample(guidance, interval=None):
        generator = torch.Generator().manual_seed(5)
        options = {"guidance": guidance, "guidance_interval": interval}
        return model.sample(2, steps=4, generator=generator, labels="fcc", **options)

    plain, guided = sample(1.0), sample(3.0)
    # times of 4 steps are 1, 0.75, 0.5, 0.25: an interval holding none of them is the plain conditional
    assert torch.equal(sample(3.0, (0.3, 0.45)), plain)
    assert torch.equal(sample(3.0, (0.0, 1.0)), guided)
    partial = sample(3.0, (0.4, 0.8))
    assert not torch.equal(partial, plain) and not torch.equal(partial, guided)
    for bad in [(0.8, 0.2), (-0.1, 0.5), (0.2, 1.5), (0.5,)]:
        with pytest.raises(InputError, match="guidance interval"):
            sample(3.0, bad)


def test_label_dropout_trains_the_unconditional_prediction_too():
    model = _conditional_model().train()
    fields = model.grid.encode_batch([FCC] * 4)
    labels = torch.tensor([0, 0, 1, 1])
    model.label_dropout = 0.0
    kept = model.loss(VoxelBatch(fields, labels), torch.Generator().manual_seed(1))["loss"]
    model.label_dropout = 0.999  # (nearly) every label dropped: the loss of the unconditional network
    dropped = model.loss(VoxelBatch(fields, labels), torch.Generator().manual_seed(1))["loss"]
    model.label_dropout = 0.0
    with torch.no_grad():
        model.net.label.weight[:2] = model.net.label.weight[2]  # every class embedded as "no class"
    same = model.loss(VoxelBatch(fields, labels), torch.Generator().manual_seed(1))["loss"]
    assert not torch.isclose(kept, dropped)
    assert torch.isclose(dropped, same)
