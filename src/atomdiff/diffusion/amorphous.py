"""Diffusion of atom positions in a fixed periodic cell, for amorphous materials of any size.

:class:`AmorphousDiffusion` bundles a local equivariant network (:mod:`atomdiff.models.local`) with the
Cartesian VE noise (:mod:`atomdiff.diffusion.noise.positions`). The cell and the species are fixed; only the
positions diffuse. The network is conditioned on the noise level and the mass density of the cell.

Denoiser (EDM preconditioning, Karras et al. 2022): ``x̂₀ = x + c_out(σ) F(x, σ, ρ)`` with
``c_out = σ σ_d / sqrt(σ² + σ_d²)``, trained with the loss ``|F − (x₀ − x)/c_out|²`` averaged over atoms, so
the network's target has unit scale at every noise level. The score is ``(x̂₀ − x)/σ²``.

Samplers: ``sde`` (reverse-time Euler–Maruyama of the VE SDE, stochastic) and ``ode`` (Euler steps of the
probability-flow ODE, deterministic given the prior draw). Both start from uniformly random positions
(see the noise module for why that is the right prior for a local model). Optional restarts re-noise the
result to an intermediate level and denoise again; optional guidance moves the denoised estimate at every
step (:mod:`atomdiff.diffusion.guidance.spectra`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from atomdiff.diffusion.noise.positions import PositionNoise
from atomdiff.errors import InputError
from atomdiff.models.local import Graph, LocalEquivariantNet, LocalNetConfig
from atomdiff.models.persistence import load_module, save_module
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.elements import atomic_masses
from atomdiff.structure.structure import Structure

KIND = "amorphous_diffusion"
SAMPLERS = ("sde", "ode")
_AVOGADRO = 6.02214076e23
_N_FREQ = 8


def mass_density(batch: StructureBatch) -> torch.Tensor:
    """``(n_structures,)`` mass density in g/cm³."""
    masses = torch.as_tensor(atomic_masses, dtype=batch.cell.dtype, device=batch.cell.device)[batch.numbers]
    grams = torch.zeros(len(batch), dtype=masses.dtype, device=masses.device).index_add(0, batch.batch_idx, masses)
    return grams / _AVOGADRO / (batch.volume * 1e-24)


def with_positions(batch: StructureBatch, cart: torch.Tensor) -> StructureBatch:
    """``batch`` with Cartesian positions ``cart`` (fractional coordinates recomputed, differentiably)."""
    inv = torch.linalg.inv(batch.cell.to(cart.dtype))
    return batch.replace(frac=torch.einsum("nj,nji->ni", cart, inv[batch.batch_idx]))


def wrap(batch: StructureBatch, cart: torch.Tensor) -> torch.Tensor:
    """Positions moved into the cell along its periodic directions (a rigid lattice translation per atom)."""
    frac = with_positions(batch, cart).frac
    periodic = batch.pbc[batch.batch_idx]
    frac = torch.where(periodic, frac - torch.floor(frac), frac)
    return torch.einsum("ni,nij->nj", frac, batch.cell[batch.batch_idx].to(cart.dtype))


@dataclasses.dataclass
class SampleOptions:
    """How to sample.

    Attributes:
        steps: noise levels of the main trajectory.
        sampler: ``sde`` or ``ode``.
        restarts: times the result is re-noised to ``restart_sigma`` (Å) and denoised again with
            ``restart_steps`` levels. Guided by XANES or G(r), re-noising to 0.2 Å lowered the misfit (and, for
            XANES, the sp3 error) of the a-C cells; from 0.5 Å (the default before session 26) XANES-guided samples
            could run away, as the surrogate's distance floor does not see pairs closing up (docs/amorphous.md).
        finish_steps: fixed-point iterations ``x ← x̂₀(x, finish_sigma)`` after the trajectory and restarts
            (0: off): each moves the atoms up the score at ``finish_sigma`` Å, a zero-temperature finish that
            takes the sample towards the nearest mode of the (slightly smoothed) learned distribution. The
            training cells are relaxed structures (energy minima), whose bonds are sharper than the prior's
            samples (C–C bond-length spread 0.085 Å against 0.11–0.12 Å); the finish brings them closer.
        finish_guidance: guidance during the finish, as a fraction of its strength (0: unguided finish). Each
            guided iteration moves the atoms by a fixed ``strength · finish_guidance · finish_sigma`` Å RMS,
            which, repeated at one level, can drive a sample away (measured: 0.3 did in one of five a-C test cells).
        min_distance: pairs closer than this (Å) in the result are pushed apart (0: off).
    """

    steps: int = 100
    sampler: str = "sde"
    restarts: int = 0
    restart_sigma: float = 0.2
    restart_steps: int = 20
    finish_steps: int = 0
    finish_sigma: float = 0.1
    finish_guidance: float = 0.1
    min_distance: float = 0.0

    def validate(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be at least 1, got {self.steps}")
        if self.sampler not in SAMPLERS:
            raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.restarts < 0 or self.restart_steps < 1 or self.restart_sigma <= 0:
            raise InputError("restarts must be ≥ 0, restart_steps ≥ 1 and restart_sigma > 0")
        if self.finish_steps < 0 or self.finish_sigma <= 0 or self.finish_guidance < 0:
            raise InputError("finish_steps must be ≥ 0, finish_sigma > 0 and finish_guidance ≥ 0")
        if self.min_distance < 0:
            raise InputError(f"min_distance must not be negative, got {self.min_distance}")


DENOISE_LIMIT = 6.0
"""Largest move of an atom by the denoiser outside training, in units of the noise level σ ..."""
DENOISE_FLOOR = 1.0
"""... but never below this many Å (see :meth:`AmorphousDiffusion.denoise`)."""


class AmorphousDiffusion(nn.Module):
    """Score model of positions in a fixed cell, its training loss and its samplers."""

    def __init__(
        self,
        net: LocalNetConfig | None = None,
        sigma_min: float = 0.01,
        sigma_max: float = 3.0,
        sigma_data: float = 0.5,
        elements: list[int] | None = None,
        densities: tuple[float, float] | None = None,
    ):
        super().__init__()
        base = net or LocalNetConfig()
        self.net_config = dataclasses.replace(base, n_cond=2 * _N_FREQ + 1, out_scalars=0, out_vector=True)
        self.net = LocalEquivariantNet(self.net_config)
        self.noise = PositionNoise(sigma_min, sigma_max)
        self.sigma_data = float(sigma_data)
        self.elements = sorted(int(z) for z in (elements or []))
        self.densities = tuple(float(x) for x in densities) if densities else None

    # --- network -------------------------------------------------------------------------------------------
    def conditioning(self, sigma: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
        """``(n_structures, 2·8 + 1)``: Fourier features of log σ and the centred density."""
        u = (torch.log(sigma) - math.log(self.noise.sigma_min)) / math.log(self.noise.sigma_max / self.noise.sigma_min)
        k = torch.arange(1, _N_FREQ + 1, dtype=sigma.dtype, device=sigma.device)
        phase = math.pi * u.unsqueeze(-1) * k
        return torch.cat([torch.sin(phase), torch.cos(phase), (density - 2.5).unsqueeze(-1)], dim=-1)

    def denoise(self, batch: StructureBatch, cart: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Denoised estimate ``x̂₀`` (``(n_atoms, 3)``) of positions ``cart`` at per-structure noise ``sigma``.

        Outside training, each atom's move ``x̂₀ − x`` is limited to ``max(DENOISE_LIMIT · σ, DENOISE_FLOOR)``
        and a non-finite move is replaced by none. Sampling with very few steps feeds the network configurations
        far from anything it was trained on (nearly random positions labelled with a small σ), where its output
        can be arbitrarily large or overflow (the shipped prior: NaN with 2 steps). In 100-step guided samples
        the largest move measured was 0.84 Å (at σ 0.03 Å up to 12σ, after the minimum-distance separation),
        so the floor of 1 Å leaves normal sampling unchanged.
        """
        moved = with_positions(batch, cart)
        graph = Graph.build(moved, cart, self.net_config.cutoff)
        cond = self.conditioning(sigma.to(cart.dtype), mass_density(batch).to(cart.dtype))
        out, _ = self.net(batch.numbers, cart, graph, batch.batch_idx, cond)
        s = sigma.to(cart.dtype)[batch.batch_idx].unsqueeze(-1)
        c_out = s * self.sigma_data / torch.sqrt(s * s + self.sigma_data**2)
        move = c_out * out
        if not self.training:
            move = torch.nan_to_num(move, nan=0.0, posinf=0.0, neginf=0.0)
            norm = torch.sqrt((move * move).sum(-1, keepdim=True) + 1e-30)
            move = move * torch.clamp(torch.clamp(DENOISE_LIMIT * s, min=DENOISE_FLOOR) / norm, max=1.0)
        return cart + move

    def loss(self, batch: StructureBatch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Denoising loss at noise levels drawn log-uniformly, one per structure."""
        per_structure, _ = self.loss_terms(batch, generator)
        return {"loss": per_structure.mean()}

    def loss_terms(self, batch: StructureBatch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-structure EDM-weighted denoising losses and their noise levels σ (Å), one level per structure.

        Above σ of about the bond length the atoms' identities are lost and the loss has an irreducible part
        that grows like (σ/σ_data)², so that the few high-σ structures of a batch dominate the gradient; a
        trainer can divide each term by a learned per-level scale (:class:`~atomdiff.training.lightning.
        NoiseLevelWeighting`).
        """
        dtype = batch.frac.dtype
        t = torch.rand(len(batch), generator=generator, dtype=dtype).to(batch.frac.device)
        sigma = self.noise.sigma(t)
        x0 = batch.cart
        eps = torch.randn(x0.shape, generator=generator, dtype=dtype).to(x0.device)
        s = sigma[batch.batch_idx].unsqueeze(-1)
        xt = x0 + s * eps
        x0_hat = self.denoise(batch, xt, sigma)
        c_out = s * self.sigma_data / torch.sqrt(s * s + self.sigma_data**2)
        per_atom = (((x0_hat - x0) / c_out) ** 2).sum(-1) / 3.0
        n = torch.bincount(batch.batch_idx, minlength=len(batch)).clamp_min(1)
        per_structure = torch.zeros(len(batch), dtype=dtype, device=x0.device).index_add(0, batch.batch_idx, per_atom)
        return per_structure / n, sigma

    # --- sampling ------------------------------------------------------------------------------------------
    def _x0(self, batch: StructureBatch, x: torch.Tensor, sigma: float, guidance, scale: float = 1.0) -> torch.Tensor:
        sig = torch.full((len(batch),), sigma, dtype=x.dtype, device=x.device)
        if guidance is not None and scale > 0 and guidance.active(sigma):
            return guidance.guide(self, batch, x, sig, scale)
        with torch.no_grad():
            return self.denoise(batch, x, sig)

    def _trajectory(
        self,
        batch: StructureBatch,
        x: torch.Tensor,
        levels: torch.Tensor,
        options: SampleOptions,
        generator: torch.Generator,
        guidance,
        tick: Callable[[], None],
    ) -> torch.Tensor:
        x0 = x
        for k in range(len(levels) - 1):
            s, s_next = float(levels[k]), float(levels[k + 1])
            x0 = self._x0(batch, x, s, guidance).detach()
            if s_next == 0.0:
                x = x0
            elif options.sampler == "ode":
                x = x + (1.0 - s_next / s) * (x0 - x)
            else:
                var = s * s - s_next * s_next
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x = x + var / (s * s) * (x0 - x) + math.sqrt(var) * z
            x = wrap(batch, x)
            tick()
        return x

    def sample(
        self,
        template: StructureBatch,
        options: SampleOptions | None = None,
        generator: torch.Generator | None = None,
        guidance=None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Positions ``(n_atoms, 3)`` (Å, inside the cells) for the species and cells of ``template``."""
        options = options or SampleOptions()
        options.validate()
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        restart_sigma = min(options.restart_sigma, self.noise.sigma_max)
        total = options.steps + options.restarts * options.restart_steps + options.finish_steps
        done = [0]

        def tick() -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0], total)

        x = self.noise.sample_prior(template.cell, template.batch_idx, generator).to(template.frac.dtype)
        x = self._trajectory(template, x, self.noise.schedule(options.steps), options, generator, guidance, tick)
        for _ in range(options.restarts):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = wrap(template, x + restart_sigma * z)
            levels = self.noise.schedule(options.restart_steps, restart_sigma)
            x = self._trajectory(template, x, levels, options, generator, guidance, tick)
        finish_sigma = min(options.finish_sigma, self.noise.sigma_max)
        for _ in range(options.finish_steps):
            x = wrap(template, self._x0(template, x, finish_sigma, guidance, options.finish_guidance).detach())
            tick()
        if options.min_distance > 0:
            x = separate(template, x, options.min_distance)
        return x

    def generate(
        self,
        template: StructureBatch,
        options: SampleOptions | None = None,
        generator: torch.Generator | None = None,
        guidance=None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Structure]:
        """Sample and return one :class:`Structure` per cell of ``template``."""
        cart = self.sample(template, options, generator, guidance, progress)
        batch = with_positions(template, cart.to(template.cell.dtype))
        out = []
        for b in range(len(batch)):
            mask = (batch.batch_idx == b).cpu().numpy()
            out.append(
                Structure(
                    batch.numbers.cpu().numpy()[mask],
                    batch.frac.detach().cpu().numpy()[mask],
                    batch.cell[b].cpu().numpy(),
                    tuple(bool(p) for p in batch.pbc[b].cpu()),
                )
            )
        return out

    # --- persistence ---------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "kind": KIND,
            "net": self.net_config.to_dict(),
            "sigma_min": self.noise.sigma_min,
            "sigma_max": self.noise.sigma_max,
            "sigma_data": self.sigma_data,
            "elements": self.elements,
            "densities": list(self.densities) if self.densities else None,
        }

    @classmethod
    def from_config(cls, config: dict) -> AmorphousDiffusion:
        if config.get("kind") != KIND:
            raise InputError(f"not an amorphous diffusion model (kind {config.get('kind')!r})")
        densities = config.get("densities")
        return cls(
            LocalNetConfig(**config["net"]),
            config["sigma_min"],
            config["sigma_max"],
            config["sigma_data"],
            config.get("elements"),
            tuple(densities) if densities else None,
        )

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``."""
        save_module(self, self.config_dict(), directory, extra)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> AmorphousDiffusion:
        return load_module(cls, directory)


def separate(batch: StructureBatch, cart: torch.Tensor, min_distance: float, iterations: int = 50) -> torch.Tensor:
    """Push apart every pair closer than ``min_distance`` (each atom moves half the overlap, repeated)."""
    x = cart.detach().clone()
    for _ in range(iterations):
        moved = with_positions(batch, x)
        graph = Graph.build(moved, x, min_distance)
        d = torch.linalg.norm(graph.vectors, dim=-1)
        close = (d < min_distance) & (d > 1e-9)
        if not bool(close.any()):
            break
        v = graph.vectors[close]
        dd = d[close].unsqueeze(-1)
        push = -0.5 * (min_distance - dd) * v / dd  # atom i moves half the overlap away from j, and j likewise
        x = x + torch.zeros_like(x).index_add(0, graph.i[close], push)
        x = wrap(batch, x)
    return x


def density_cell(numbers: np.ndarray, density: float) -> np.ndarray:
    """Cubic cell (rows, Å) holding atoms ``numbers`` at mass density ``density`` (g/cm³)."""
    if density <= 0:
        raise InputError(f"density must be positive, got {density}")
    grams = float(np.sum(atomic_masses[np.asarray(numbers)])) / _AVOGADRO
    edge = (grams / density * 1e24) ** (1.0 / 3.0)
    return np.eye(3) * edge
