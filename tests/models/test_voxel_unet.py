"""The periodic 3D U-Net: shapes, circular padding everywhere, exact commutation with circular shifts by
multiples of its downsampling factor, and dependence on the diffusion time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atomdiff.errors import InputError
from atomdiff.models.voxel_unet import VoxelUNet, VoxelUNetConfig


def _net(channels: int = 2, mults: tuple[int, ...] = (1, 2, 2)) -> VoxelUNet:
    torch.manual_seed(0)
    return VoxelUNet(VoxelUNetConfig(channels=channels, base=8, mults=mults, time_dim=16, groups=4)).double().eval()


def test_output_shape():
    net = _net()
    x = torch.randn(3, 2, 16, 8, 12, dtype=torch.float64)
    assert net(x, torch.rand(3, dtype=torch.float64)).shape == x.shape
    assert net.factor == 4


def test_every_convolution_is_periodic():
    convs = [m for m in _net().modules() if isinstance(m, nn.Conv3d)]
    assert convs
    for conv in convs:
        assert conv.kernel_size == (1, 1, 1) or conv.padding_mode == "circular"


@pytest.mark.parametrize("shift", [(4, 0, 0), (0, -8, 4), (12, 4, -4)])
def test_commutes_with_shifts_by_multiples_of_the_factor(shift):
    net = _net()
    x = torch.randn(2, 2, 16, 16, 16, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    with torch.no_grad():
        out_of_shifted = net(torch.roll(x, shift, dims=(2, 3, 4)), t)
        shifted_out = torch.roll(net(x, t), shift, dims=(2, 3, 4))
    torch.testing.assert_close(out_of_shifted, shifted_out, atol=1e-10, rtol=1e-10)


def test_time_embedding_changes_the_output():
    net = _net()
    x = torch.randn(1, 2, 8, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        a = net(x, torch.tensor([0.1], dtype=torch.float64))
        b = net(x, torch.tensor([0.9], dtype=torch.float64))
    assert (a - b).abs().max() > 1e-4


def test_grid_not_a_multiple_of_the_factor():
    with pytest.raises(InputError, match="shape"):
        _net()(torch.zeros(1, 2, 8, 8, 10, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))


def test_class_labels_condition_the_output_and_the_null_label_is_the_default():
    torch.manual_seed(0)
    config = VoxelUNetConfig(channels=1, base=8, mults=(1, 2), time_dim=16, groups=4, classes=("fcc", "bcc"))
    net = VoxelUNet(config).double().eval()
    assert net.null_label == 2
    x = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.3, 0.3], dtype=torch.float64)
    with torch.no_grad():
        # a new embedding is zero: the conditional network starts as the unconditional one
        assert torch.equal(net(x, t, torch.tensor([0, 1])), net(x, t))
        nn.init.normal_(net.label.weight)
        fcc, bcc = net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 1]))
        assert not torch.allclose(fcc, bcc)
        assert torch.equal(net(x, t), net(x, t, torch.tensor([2, 2])))
    with pytest.raises(InputError, match="labels must be in 0..2"):
        net(x, t, torch.tensor([0, 3]))
    with pytest.raises(InputError, match="without classes"):
        _net(channels=1)(x, t, torch.tensor([0, 0]))
    with pytest.raises(InputError, match="unique"):
        VoxelUNetConfig(classes=("fcc", "fcc"))
