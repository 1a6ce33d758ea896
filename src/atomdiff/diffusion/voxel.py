"""Grand-canonical diffusion on periodic voxel fields: a periodic U-Net, Gaussian noise on the grid, samplers.

:class:`VoxelDiffusion` bundles the :class:`~atomdiff.models.voxel_unet.VoxelUNet`, the
:class:`~atomdiff.diffusion.noise.voxel.VoxelNoise` process and the :class:`~atomdiff.representations.voxel.VoxelGrid`
its fields live on (species, grid shape, Gaussian width) together with the box they were made in. Samples are
fields; :meth:`VoxelDiffusion.generate_structures` decodes them, and the decoder decides how many atoms each
holds, so the atom count is generated rather than fixed. Because the network is convolutional and periodic,
it can also sample a larger grid than it was trained on (a larger box at the same voxel size).

A model trained with class labels (``VoxelUNetConfig.classes``, e.g. the phase of each training crystal) samples
a requested class, optionally with classifier-free guidance (Ho & Salimans 2022): the prediction is
``u + w (c − u)`` from the conditional ``c`` and unconditional ``u`` outputs of the same network, trained by
replacing a fraction :attr:`VoxelDiffusion.label_dropout` of the labels with the "no class" label.

The model is saved as ``model.safetensors`` plus ``config.json`` (no pickles), as the crystal model is.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from atomdiff.diffusion.noise.voxel import VoxelNoise
from atomdiff.errors import InputError
from atomdiff.models.persistence import load_module, save_module
from atomdiff.models.voxel_unet import VoxelUNet, VoxelUNetConfig
from atomdiff.representations.voxel import VoxelGrid
from atomdiff.structure.structure import Structure


@dataclasses.dataclass
class VoxelBatch:
    """Fields ``(B, C, Nx, Ny, Nz)`` with their class labels ``(B,)`` (indices into the network's classes)."""

    fields: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.fields.shape[0])


SAMPLERS = {"ddpm": 1.0, "ddim": 0.0}
"""Sampler name → ``eta`` of the reverse step (1: ancestral DDPM, 0: deterministic DDIM)."""


def check_interval(interval: Sequence[float] | None) -> tuple[float, float]:
    """A guidance interval ``(lo, hi)`` of diffusion times, ``0 ≤ lo ≤ hi ≤ 1``; ``None`` is the whole ``[0, 1]``."""
    if interval is None:
        return 0.0, 1.0
    values = tuple(float(v) for v in interval)
    if len(values) != 2 or not 0.0 <= values[0] <= values[1] <= 1.0:
        raise InputError(f"guidance interval must be two times 0 <= lo <= hi <= 1, got {list(interval)}")
    return values


class VoxelDiffusion(nn.Module):
    """U-Net + noise process + grid (+ the box of the training fields, used to decode samples).

    Args:
        grid: species, shape and Gaussian width of the fields.
        net_config: the U-Net; its ``channels`` must be the number of species (default: small U-Net).
        cell: the box (rows are lattice vectors, Å) the fields of ``grid.shape`` span; needed to decode.
        noise: the noise process (default: ε-prediction, cosine schedule).
    """

    def __init__(
        self,
        grid: VoxelGrid,
        net_config: VoxelUNetConfig | None = None,
        cell: np.ndarray | None = None,
        noise: VoxelNoise | None = None,
    ):
        super().__init__()
        net_config = net_config or VoxelUNetConfig(channels=grid.n_channels)
        if net_config.channels != grid.n_channels:
            raise InputError(f"net_config: channels = {net_config.channels} but the grid has {grid.n_channels} species")
        self.grid = grid
        self.net = VoxelUNet(net_config)
        self.noise = noise or VoxelNoise()
        self.cell = None if cell is None else grid.check_cell(cell)
        self.occupied_weight = 0.0
        """Training only: extra loss weight of voxels in proportion to their density (0: plain MSE)."""
        self.label_dropout = 0.1
        """Training only: fraction of class labels replaced by the "no class" label (classifier-free guidance)."""
        self._check_shape(grid.shape)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def classes(self) -> tuple[str, ...]:
        """Names of the class labels the network is conditioned on (empty: unconditional)."""
        return self.net.config.classes

    def label_index(self, name: str) -> int:
        """Index of the class ``name`` (``InputError`` listing the classes when it is not one)."""
        if not self.classes:
            raise InputError(f"class {name!r}: this model was trained without class labels (it is unconditional)")
        if name not in self.classes:
            raise InputError(f"class {name!r} is not one this model knows; it knows {', '.join(self.classes)}")
        return self.classes.index(name)

    def _labels(self, labels: Sequence[int | str] | None, n: int) -> torch.Tensor | None:
        """``labels`` (names or indices, one per sample or one for all) as a ``(n,)`` long tensor."""
        if labels is None:
            return None
        if isinstance(labels, str | int):
            labels = [labels] * n
        if len(labels) != n:
            raise InputError(f"labels: need one per sample ({n}), got {len(labels)}")
        if not self.classes:
            raise InputError("labels: this model was trained without class labels (it is unconditional)")
        idx = [self.label_index(v) if isinstance(v, str) else int(v) for v in labels]
        if any(not 0 <= i < len(self.classes) for i in idx):
            raise InputError(f"labels must index the model's {len(self.classes)} classes, got {idx}")
        return torch.tensor(idx, dtype=torch.long, device=self.device)

    def _predict(self, x: torch.Tensor, t: float, labels: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """The network's output at time ``t``; with ``labels``, guided by ``guidance`` (1: plain conditional)."""
        times = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        if labels is None:
            return self.net(x, times)
        conditional = self.net(x, times, labels)
        if guidance == 1.0:
            return conditional
        unconditional = self.net(x, times)
        return unconditional + guidance * (conditional - unconditional)

    def _check_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        shape = tuple(int(n) for n in shape)
        f = self.net.factor
        if len(shape) != 3 or min(shape) < 1 or any(n % f for n in shape):
            raise InputError(f"shape must be three grid sizes that are multiples of {f}, got {shape}")
        return shape

    # --- training --------------------------------------------------------------------------------------
    def loss(
        self, fields: torch.Tensor | VoxelBatch, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Denoising loss of a batch of fields ``(B, C, Nx, Ny, Nz)`` (as :meth:`VoxelGrid.encode` makes them,
        or a :class:`VoxelBatch` with their labels for a class-conditioned network) at random times;
        ``{"loss": ...}``."""
        labels = None
        if isinstance(fields, VoxelBatch):
            fields, labels = fields.fields, fields.labels.to(self.device)
            # drawn whatever the dropout, so that the times and noise of a seed do not depend on it
            drop = torch.rand(labels.shape, generator=generator).to(self.device) < self.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.net.null_label), labels)
        elif self.classes:
            raise InputError("this network is class-conditioned: give a VoxelBatch with the fields' labels")
        if fields.dim() != 5 or fields.shape[1] != self.grid.n_channels:
            raise InputError(
                f"fields must have shape (B, {self.grid.n_channels}, Nx, Ny, Nz), got {tuple(fields.shape)}"
            )
        self._check_shape(fields.shape[2:])
        x0 = self.noise.encode(fields.to(self.device, self.dtype))
        t = (torch.rand(fields.shape[0], generator=generator, dtype=torch.float64) * (1 - 1e-3) + 1e-3).to(self.device)
        x_t, eps = self.noise.sample_marginal(x0, t, generator)
        output = self.net(x_t, t.to(x0.dtype), labels)
        weight = None
        if self.occupied_weight > 0:
            # atoms fill a few per cent of the voxels: without weighting the loss is dominated by empty space
            # and the denoiser learns to erase weak peaks (measured: atoms lost even at ᾱ = 0.79)
            density = fields.to(x0).sum(dim=1, keepdim=True).clamp(0.0, 1.0)
            weight = 1.0 + self.occupied_weight * density
            weight = weight / weight.mean(dim=(1, 2, 3, 4), keepdim=True)
        return {"loss": self.noise.loss(output, x0, eps, t, weight)}

    # --- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        shape: Sequence[int] | None = None,
        steps: int = 100,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
        sampler: str = "ddpm",
        labels: Sequence[int | str] | int | str | None = None,
        guidance: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """``n`` fields ``(n, C, *shape)`` (in field units, ≥ 0) by ``steps`` reverse steps from noise.

        Args:
            shape: grid of the samples (default: the training grid); multiples of the U-Net's factor.
            generator: all random numbers come from it (on the CPU), so a seed reproduces the samples.
            progress: called with ``(step, steps)`` after every step.
            sampler: ``"ddpm"`` (ancestral) or ``"ddim"`` (deterministic after the initial noise).
            labels: class of each sample (names or indices; one value for all) for a class-conditioned model;
                ``None`` samples unconditionally.
            guidance: classifier-free guidance weight with ``labels`` (1: conditional only, > 1 sharper, costs
                a second network call per step).
            guidance_interval: ``(lo, hi)``: guide only at times ``lo ≤ t ≤ hi`` (t from 1, noise, to 0) and use
                the plain conditional prediction elsewhere (Kynkäänniemi et al. 2024: guidance at the highest
                noise levels mostly narrows the samples, at the lowest it distorts details). ``None``: always.
        """
        if sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        if n < 0:
            raise InputError(f"n must not be negative, got {n}")
        if guidance < 0:
            raise InputError(f"guidance must not be negative, got {guidance}")
        lo, hi = check_interval(guidance_interval)
        label_tensor = self._labels(labels, n)
        shape = self._check_shape(self.grid.shape if shape is None else shape)
        x = self.noise.sample_prior((n, self.grid.n_channels, *shape), generator, self.dtype).to(self.device)
        times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        for k in range(steps):
            t, t_prev = float(times[k]), float(times[k + 1])
            if n:
                output = self._predict(x, t, label_tensor, guidance if lo <= t <= hi else 1.0)
                x = self.noise.reverse_step(x, output, t, t_prev, generator, eta=SAMPLERS[sampler])
            if progress is not None:
                progress(k + 1, steps)
        return self.noise.decode(x).clamp_min(0.0)

    @torch.no_grad()
    def inpaint(
        self,
        known: torch.Tensor,
        mask: torch.Tensor,
        n: int = 1,
        steps: int = 100,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
        resample: int = 1,
        sampler: str = "ddpm",
        start: float = 1.0,
    ) -> torch.Tensor:
        """``n`` fields that agree with ``known`` where ``mask`` is 1 and are generated where it is 0 (RePaint,
        Lugmayr et al. 2022).

        At every reverse step the known voxels are replaced by ``known`` noised to the new time (a sample of the
        forward process), so the generated voxels are denoised in the context of a consistent noisy field; with
        ``resample > 1`` each step is repeated after re-noising one step back (RePaint's resampling, which lets
        the two regions harmonise at the cost of ``resample`` × more network calls). At the end the known voxels
        equal ``known`` exactly.

        Args:
            known: ``(C, *shape)`` field (field units, as :meth:`VoxelGrid.encode` makes it).
            mask: ``(*shape)`` or ``(C, *shape)``, 1 (or True) where ``known`` is kept.
            start: time the reverse process starts at. 1: the generated voxels start from pure noise; below 1
                they start from ``known`` itself noised to that time (SDEdit, Meng et al. 2022), so the result
                is a variation of what ``known`` holds there, the smaller ``start`` the closer.
        """
        if sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if steps < 1 or resample < 1:
            raise InputError(f"steps and resample must be at least 1, got {steps} and {resample}")
        if not 0.0 < start <= 1.0:
            raise InputError(f"start must be in (0, 1], got {start}")
        if known.dim() != 4 or known.shape[0] != self.grid.n_channels:
            raise InputError(f"known must have shape ({self.grid.n_channels}, Nx, Ny, Nz), got {tuple(known.shape)}")
        shape = self._check_shape(known.shape[1:])
        mask = torch.as_tensor(mask).to(self.device, self.dtype)
        if tuple(mask.shape) not in (shape, tuple(known.shape)):
            raise InputError(f"mask must have shape {shape} or {tuple(known.shape)}, got {tuple(mask.shape)}")
        mask = mask.expand(known.shape).unsqueeze(0)
        x0_known = self.noise.encode(known.to(self.device, self.dtype)).unsqueeze(0).expand(n, *known.shape)
        if start < 1.0:
            x, _ = self.noise.sample_marginal(x0_known, torch.full((n,), start, dtype=torch.float64), generator)
        else:
            x = self.noise.sample_prior((n, *known.shape), generator, self.dtype).to(self.device)
        times = torch.linspace(start, 0.0, steps + 1, dtype=torch.float64)
        for k in range(steps):
            t, t_prev = float(times[k]), float(times[k + 1])
            for r in range(resample):
                if n:
                    output = self._predict(x, t, None, 1.0)
                    x = self.noise.reverse_step(x, output, t, t_prev, generator, eta=SAMPLERS[sampler])
                    if t_prev > 0:
                        noisy_known, _ = self.noise.sample_marginal(
                            x0_known, torch.full((n,), t_prev, dtype=torch.float64), generator
                        )
                    else:
                        noisy_known = x0_known
                    x = mask * noisy_known + (1 - mask) * x
                if r + 1 < resample and t_prev > 0 and n:
                    # back from t_prev to t: x_t = sqrt(ab_t/ab_prev) x_prev + sqrt(1 - ab_t/ab_prev) z
                    ratio = float(self.noise.alpha_bar(t)) / float(self.noise.alpha_bar(t_prev))
                    z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                    x = math.sqrt(ratio) * x + math.sqrt(max(1 - ratio, 0.0)) * z
            if progress is not None:
                progress(k + 1, steps)
        return self.noise.decode(x).clamp_min(0.0)

    def cell_for(self, shape: Sequence[int]) -> np.ndarray:
        """The box a grid of ``shape`` spans at the training voxel size."""
        if self.cell is None:
            raise InputError("cell: the model has no box; give the cell the samples span")
        ratio = np.asarray(shape, dtype=np.float64) / np.asarray(self.grid.shape, dtype=np.float64)
        return self.cell * ratio[:, None]

    def generate_structures(
        self,
        n: int,
        cell: np.ndarray | None = None,
        shape: Sequence[int] | None = None,
        steps: int = 100,
        generator: torch.Generator | None = None,
        progress: Callable[[int, int], None] | None = None,
        sampler: str = "ddpm",
        labels: Sequence[int | str] | int | str | None = None,
        guidance: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
        **decode_options,
    ) -> list[Structure]:
        """Sample ``n`` fields and decode each into a :class:`Structure` (the decoder finds the number of atoms,
        which may be zero). ``cell`` defaults to the training box scaled to ``shape``; ``labels``, ``guidance``
        and ``guidance_interval`` as in :meth:`sample`; ``decode_options`` go to :meth:`VoxelGrid.detect`."""
        shape = self._check_shape(self.grid.shape if shape is None else shape)
        cell = self.cell_for(shape) if cell is None else cell
        grid = dataclasses.replace(self.grid, shape=shape)
        grid.check_cell(cell)
        fields = self.sample(n, shape, steps, generator, progress, sampler, labels, guidance, guidance_interval)
        return [grid.decode(f, cell, **decode_options) for f in fields.cpu()]

    # --- persistence -------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "kind": "voxel_diffusion",
            "format_version": 1,
            "grid": {
                **dataclasses.asdict(self.grid),
                "species": list(self.grid.species),
                "shape": list(self.grid.shape),
            },
            "net": {**dataclasses.asdict(self.net.config), "mults": list(self.net.config.mults)},
            "cell": None if self.cell is None else self.cell.tolist(),
            "noise": {
                "prediction": self.noise.prediction,
                "shift": self.noise.shift,
                "scale": self.noise.scale,
                "field_range": list(self.noise.field_range),
                "s": self.noise.s,
            },
        }

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``."""
        save_module(self, self.config_dict(), directory, extra)

    @classmethod
    def from_config(cls, config: dict) -> VoxelDiffusion:
        if config.get("kind") != "voxel_diffusion":
            raise InputError(f"not a voxel diffusion model (kind {config.get('kind')!r})")
        grid = config["grid"]
        noise = dict(config["noise"])
        noise["field_range"] = tuple(noise["field_range"])
        return cls(
            VoxelGrid(tuple(grid["species"]), tuple(grid["shape"]), grid["sigma"], grid["truncate"]),
            VoxelUNetConfig(**config["net"]),
            None if config.get("cell") is None else np.asarray(config["cell"]),
            VoxelNoise(**noise),
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> VoxelDiffusion:
        """Load a model saved by :meth:`save` (evaluation mode)."""
        return load_module(cls, directory)
