"""A 3D U-Net on periodic voxel fields, with circular padding everywhere and a diffusion-time embedding.

Every 3×3×3 convolution pads circularly, downsampling is a stride-2 convolution and upsampling is
nearest-neighbour repetition followed by a convolution, and GroupNorm statistics are global over the grid.
So the network commutes with circular shifts of the grid by any multiple of its total downsampling factor
(:attr:`VoxelUNet.factor`) — for a field on a crystal, with translations of the crystal by those many voxels —
and has no boundary anywhere. Shifts by other amounts commute only approximately (stride-2 sampling).

The diffusion time enters every residual block as a per-channel scale and shift (FiLM) of its normalised
activations, computed from a sinusoidal embedding. A network with ``classes`` (e.g. crystal phases) adds a
learned embedding of the class label to the time embedding; the extra label :attr:`VoxelUNet.null_label`
means "no class given" (trained by dropping labels, so that one network gives both the conditional and the
unconditional prediction that classifier-free guidance combines).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from atomdiff.errors import InputError
from atomdiff.models.crystal import sinusoidal_embedding


@dataclasses.dataclass
class VoxelUNetConfig:
    """Hyper-parameters of :class:`VoxelUNet` (stored as JSON next to the weights).

    Attributes:
        channels: channels of the field in and out (one per species).
        base: channels of the first level.
        mults: channel multiplier of each level; ``len(mults) - 1`` downsamplings by 2.
        blocks: residual blocks per level (on the way down and up).
        time_dim: width of the time embedding.
        groups: GroupNorm groups (reduced to a divisor of the channel count where needed).
        classes: names of the class labels the network is conditioned on (empty: unconditional).
    """

    channels: int = 1
    base: int = 16
    mults: tuple[int, ...] = (1, 2, 2)
    blocks: int = 1
    time_dim: int = 64
    groups: int = 8
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.mults = tuple(int(m) for m in self.mults)
        self.classes = tuple(str(c) for c in self.classes)
        if len(set(self.classes)) != len(self.classes):
            raise InputError(f"VoxelUNetConfig: class names must be unique, got {list(self.classes)}")
        if self.channels < 1 or self.base < 1 or self.blocks < 1 or not self.mults or min(self.mults) < 1:
            raise InputError(f"VoxelUNetConfig: channels, base, blocks and mults must be positive, got {self}")


def periodic_conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    """3×3×3 convolution with circular (periodic) padding."""
    return nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, padding_mode="circular")


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(channels, groups), channels)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = periodic_conv(c_in, c_out)
        self.film = nn.Linear(time_dim, 2 * c_out)
        self.norm2 = _norm(c_out, groups)
        self.conv2 = periodic_conv(c_out, c_out)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(temb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(nn.functional.silu(h))
        return self.skip(x) + h


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = periodic_conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


class VoxelUNet(nn.Module):
    """``forward(x (B, C, Nx, Ny, Nz), t (B,), labels (B,) | None)`` → ``(B, C, Nx, Ny, Nz)``; each of
    ``Nx, Ny, Nz`` must be a multiple of :attr:`factor`; ``labels`` index ``config.classes`` (or are
    :attr:`null_label`; ``None`` means :attr:`null_label` for every field)."""

    def __init__(self, config: VoxelUNetConfig | None = None):
        super().__init__()
        self.config = c = config or VoxelUNetConfig()
        widths = [c.base * m for m in c.mults]
        self.time = nn.Sequential(nn.Linear(c.time_dim, c.time_dim), nn.SiLU(), nn.Linear(c.time_dim, c.time_dim))
        if c.classes:
            self.label = nn.Embedding(len(c.classes) + 1, c.time_dim)
            nn.init.zeros_(self.label.weight)  # starts as the unconditional network
        self.stem = periodic_conv(c.channels, c.base)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = c.base
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(c.blocks):
                blocks.append(_ResBlock(ch, width, c.time_dim, c.groups))
                ch = width
            self.down.append(blocks)
            if level < len(widths) - 1:
                self.downsample.append(periodic_conv(ch, ch, stride=2))
        self.mid = nn.ModuleList([_ResBlock(ch, ch, c.time_dim, c.groups) for _ in range(2)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(widths))):
            if level < len(widths) - 1:
                self.upsample.append(_Upsample(ch))
            blocks = nn.ModuleList()
            for b in range(c.blocks):
                c_in = ch + widths[level] if b == 0 else ch  # the skip joins the first block of a level
                blocks.append(_ResBlock(c_in, widths[level], c.time_dim, c.groups))
                ch = widths[level]
            self.up.append(blocks)
        self.head = nn.Sequential(_norm(ch, c.groups), nn.SiLU(), periodic_conv(ch, c.channels))

    @property
    def factor(self) -> int:
        """Total downsampling factor: grid sizes must be multiples of it, and shifts by multiples of it
        commute exactly with the network."""
        return 2 ** (len(self.config.mults) - 1)

    @property
    def null_label(self) -> int:
        """The label index meaning "no class given"."""
        return len(self.config.classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.config.channels:
            raise InputError(f"field must have shape (B, {self.config.channels}, Nx, Ny, Nz), got {tuple(x.shape)}")
        if any(n % self.factor for n in x.shape[2:]):
            raise InputError(f"shape: grid sizes {tuple(x.shape[2:])} must be multiples of {self.factor}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        temb = self.time(sinusoidal_embedding(t, self.config.time_dim))
        if self.config.classes:
            if labels is None:
                labels = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
            labels = torch.as_tensor(labels, dtype=torch.long, device=x.device).reshape(-1).expand(x.shape[0])
            if labels.min() < 0 or labels.max() > self.null_label:
                raise InputError(f"labels must be in 0..{self.null_label}, got {labels.tolist()}")
            temb = temb + self.label(labels)
        elif labels is not None:
            raise InputError("labels: this network was trained without classes")
        h = self.stem(x)
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, temb)
            skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
        for block in self.mid:
            h = block(h, temb)
        for i, blocks in enumerate(self.up):
            if i > 0:
                h = self.upsample[i - 1](h)
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, temb)
        return self.head(h)
