"""Joint diffusion of lattice, fractional coordinates and species, with training loss and samplers.

:class:`CrystalDiffusion` bundles the score network with its three noise processes and the statistics of the
data it was trained on; it is saved as ``model.safetensors`` plus ``config.json`` (no pickles).

A model whose network carries a :class:`~atomdiff.models.pattern_encoder.PatternEncoder` is conditioned on a powder
pattern (trained with the condition dropped for a fraction of structures) and is sampled with classifier-free
guidance, ``(1 + w)·conditioned − w·unconditioned`` for the coordinate score, the lattice noise and the species
logits, where ``w = cfg_scale``; ``w = 0`` is plain conditional sampling.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from atomdiff.diffusion.constraints import CompositionConstraint, parse_formula
from atomdiff.diffusion.guidance import PhysicsGuidance, RepulsionGuidance
from atomdiff.diffusion.noise import MASK, LatticeNoise, MaskedSpeciesNoise, WrappedNormalNoise
from atomdiff.diffusion.noise.lattice import cell_to_log_gram, unvech
from atomdiff.errors import InputError
from atomdiff.models.crystal import CrystalNetConfig, CrystalScoreNet
from atomdiff.models.persistence import load_module, save_module
from atomdiff.structure.batch import StructureBatch
from atomdiff.structure.structure import Structure, hill_formula

#: classifier-free guidance scale used by default for a pattern-conditioned model (best one-sample match rate of
#: ``perov5_pattern`` among 0–3, docs/crystal_diffusion.md)
DEFAULT_CFG_SCALE = 2.0


@dataclasses.dataclass
class DataStatistics:
    """What the model learned from: lattice statistics, atom counts, elements and cell contents.

    ``cells`` counts the training cells by content (the cell's formula, e.g. ``"Cu2S4SnZn"`` for kesterite's
    8-atom cell): the compositions and cell sizes an element-list solve proposes (models exported before it
    existed have none). ``volume_per_atom`` is the mean and standard deviation of ln(V / N) (V in Å³) over the
    training cells and ``primitive_cells`` counts them by the content of their primitive cell (carbon-24 stores
    2-atom primitive cells as 6-atom ones); models exported before session 33 have neither
    (:meth:`log_volume_per_atom` and :meth:`content_count` then estimate them from what they have)."""

    lattice_mean: list[float] = dataclasses.field(default_factory=lambda: [0.0] * 6)
    lattice_std: list[float] = dataclasses.field(default_factory=lambda: [1.0] * 6)
    atom_counts: dict[int, int] = dataclasses.field(default_factory=lambda: {1: 1})
    elements: list[int] = dataclasses.field(default_factory=list)
    cells: dict[str, int] = dataclasses.field(default_factory=dict)
    volume_per_atom: list[float] | None = None
    primitive_cells: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_structures(
        cls, structures: Sequence[Structure], progress: Callable[[int, int], None] | None = None
    ) -> DataStatistics:
        """The statistics of ``structures``; ``progress(done, total)`` follows the primitive-cell search, the slow
        part (pymatgen's search takes up to seconds on a noisy box of a few hundred atoms with no smaller cell)."""
        batch = StructureBatch.from_structures(structures)
        x = cell_to_log_gram(batch.cell, batch.n_atoms)
        counts: dict[int, int] = {}
        for s in structures:
            counts[len(s)] = counts.get(len(s), 0) + 1
        elements = sorted({int(z) for s in structures for z in s.numbers})
        cells = Counter(s.formula for s in structures)
        std = x.std(0).clamp_min(0.05) if len(structures) > 1 else torch.ones(6, dtype=x.dtype)
        log_v = np.log([s.volume / len(s) for s in structures])
        volume = [float(log_v.mean()), float(max(log_v.std(), 0.02)) if len(structures) > 1 else 0.3]
        primitive: Counter[str] = Counter()
        for k, s in enumerate(structures):
            primitive[hill_formula(s.to_pymatgen().get_primitive_structure().atomic_numbers)] += 1
            if progress is not None:
                progress(k + 1, len(structures))
        return cls(
            x.mean(0).tolist(),
            std.tolist(),
            dict(sorted(counts.items())),
            elements,
            dict(sorted(cells.items())),
            volume,
            dict(sorted(primitive.items())),
        )

    @property
    def max_atoms(self) -> int:
        return max(self.atom_counts)

    def content_count(self, content: dict[int, int]) -> int:
        """How many training cells have ``content`` (Z → count) as their primitive cell (``primitive_cells``);
        where that is not recorded, how many hold a whole number of copies of it (``cells``: a primitive cell may
        have been stored as a supercell)."""
        if self.primitive_cells:
            return sum(count for text, count in self.primitive_cells.items() if parse_formula(text) == content)
        total = 0
        for text, count in self.cells.items():
            other = parse_formula(text)
            if set(other) != set(content):
                continue
            ratios = {other[z] / content[z] for z in content}
            k = next(iter(ratios))
            if len(ratios) == 1 and k >= 1 and k == int(k):
                total += count
        return total

    def log_volume_per_atom(self) -> tuple[float, float]:
        """Mean and spread of ln(V / N) (Å³ per atom) of the training cells: ``volume_per_atom`` where recorded,
        else read from the lattice statistics: the trace of log(G / N^(2/3)) is 2 ln(V / N), so the mean is half
        the sum of the diagonal means, and the spread takes the diagonal components as independent (their
        covariance is not stored), half the root of the sum of their variances. That spread is too wide, the
        diagonal components being anticorrelated (a cell stretched one way is squeezed another): carbon-24's
        training cells give 0.366 where their ln(V / N) has a standard deviation of 0.104."""
        if self.volume_per_atom is not None:
            return float(self.volume_per_atom[0]), float(self.volume_per_atom[1])
        mean = 0.5 * sum(self.lattice_mean[:3])
        spread = 0.5 * math.sqrt(sum(s * s for s in self.lattice_std[:3]))
        return mean, spread


@dataclasses.dataclass
class LossWeights:
    frac: float = 1.0
    lattice: float = 1.0
    species: float = 1.0


class CrystalDiffusion(nn.Module):
    """Score network + noise processes + data statistics."""

    def __init__(
        self,
        net_config: CrystalNetConfig | None = None,
        stats: DataStatistics | None = None,
        sigma_min: float = 0.005,
        sigma_max: float = 0.5,
    ):
        super().__init__()
        self.net = CrystalScoreNet(net_config)
        self.stats = stats or DataStatistics()
        self.frac_noise = WrappedNormalNoise(sigma_min, sigma_max)
        self.lattice_noise = LatticeNoise(torch.tensor(self.stats.lattice_mean), torch.tensor(self.stats.lattice_std))
        self.species_noise = MaskedSpeciesNoise(self.net.config.vocab)

    @property
    def conditioned(self) -> bool:
        """Whether the model takes a powder pattern (has a pattern encoder)."""
        return self.net.pattern_encoder is not None

    def encode_patterns(self, features: torch.Tensor, radiation: torch.Tensor) -> torch.Tensor:
        """Conditioning vectors ``(B, cond_dim)`` of encoder inputs ``(B, 2, n_q)`` (see :mod:`pattern_encoder`)."""
        if self.net.pattern_encoder is None:
            raise InputError("this model is not pattern-conditioned (it has no pattern encoder)")
        device = next(self.net.parameters()).device
        return self.net.pattern_encoder(features.to(device), radiation.to(device)).to(features.device)

    def _predict(self, tokens, frac, x, n_atoms, batch_idx, t_vec, condition, cfg_scale):
        """The network's outputs, with classifier-free guidance when a condition and a scale are given.

        When the network alone sits on another device (``model.net.to("cuda")``), its inputs
        go there and its outputs come back: the sampler's state and random draws stay on the CPU, so a seed gives
        the same draws on every device."""
        gram = self.lattice_noise.gram(x, n_atoms)
        device = next(self.net.parameters()).device
        args = (tokens, frac, x, gram, batch_idx, t_vec)
        if device != frac.device:
            args = tuple(a.to(device) for a in args)
            condition = None if condition is None else condition.to(device)
        out = self.net(*args, condition)
        if condition is not None and cfg_scale != 0:
            # the unconditioned branch sees the zero vector, as structures whose condition was dropped in training
            free = self.net(*args, torch.zeros_like(condition))
            out = tuple(c + cfg_scale * (c - u) for c, u in zip(out, free, strict=True))
        return out if device == frac.device else tuple(o.to(frac.device) for o in out)

    # --- training --------------------------------------------------------------------------------------
    def loss(
        self,
        batch: StructureBatch,
        csp_fraction: float = 0.5,
        weights: LossWeights | None = None,
        generator: torch.Generator | None = None,
        condition: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Denoising losses at random times. A ``csp_fraction`` of structures keep their species (crystal
        structure prediction); the others have species masked as in de novo generation."""
        w = weights or LossWeights()
        n_struct = len(batch)
        n_atoms = batch.n_atoms
        device = batch.frac.device  # random numbers are drawn on the CPU generator, then moved
        t = (torch.rand(n_struct, generator=generator, dtype=torch.float64) * (1 - 1e-3) + 1e-3).to(device)
        t_atom = t[batch.batch_idx]
        sigma = self.frac_noise.sigma(t_atom).unsqueeze(-1)
        frac_t, frac_target = self.frac_noise.sample_marginal(batch.frac.double(), sigma, generator)
        x0 = self.lattice_noise.encode(batch.cell.double(), n_atoms)
        x_t, eps = self.lattice_noise.sample_marginal(x0, t, generator)
        csp = (torch.rand(n_struct, generator=generator) < csp_fraction).to(device)
        tokens = self.species_noise.sample_marginal(
            batch.numbers, torch.where(csp[batch.batch_idx], 0.0, t_atom), generator
        )
        gram = self.lattice_noise.gram(x_t, n_atoms)
        frac_pred, eps_pred, logits = self.net(tokens, frac_t, x_t, gram, batch.batch_idx, t, condition)
        loss_frac = ((frac_pred - frac_target.to(frac_pred)) ** 2).mean()
        loss_lattice = ((eps_pred - eps.to(eps_pred)) ** 2).mean()
        masked = tokens == MASK
        if masked.any():
            loss_species = nn.functional.cross_entropy(logits[masked], batch.numbers[masked])
        else:
            loss_species = logits.sum() * 0.0
        total = w.frac * loss_frac + w.lattice * loss_lattice + w.species * loss_species
        return {"loss": total, "frac": loss_frac, "lattice": loss_lattice, "species": loss_species}

    # --- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        constraint: CompositionConstraint | None = None,
        steps: int = 200,
        sampler: str = "pc",
        corrector_snr: float = 0.2,
        seed: int = 0,
        numbers: Sequence[np.ndarray] | None = None,
        condition: torch.Tensor | None = None,
        progress: Callable[[int, int], None] | None = None,
        guidance: PhysicsGuidance | RepulsionGuidance | Sequence[PhysicsGuidance | RepulsionGuidance] | None = None,
        cfg_scale: float = 0.0,
        cells: torch.Tensor | None = None,
        start: tuple[Sequence[np.ndarray], float] | None = None,
    ) -> list[Structure]:
        """Generate ``n`` structures.

        Args:
            constraint: composition constraint (with ``formula`` the species are fixed: structure prediction).
            steps: number of denoising steps (the cost is proportional).
            sampler: ``"pc"`` predictor–corrector (reverse SDE + one Langevin corrector step) or ``"ode"``
                (probability-flow ODE for coordinates, deterministic DDIM for the lattice).
            numbers: the exact atomic numbers of each cell (CSP), overriding ``constraint``.
            progress: called with ``(step, steps)``.
            guidance: steers every step by a measured pattern, or keeps atoms apart, or several such terms
                (see :mod:`atomdiff.diffusion.guidance`).
            condition: ``(n, cond_dim)`` conditioning vectors (e.g. :meth:`encode_patterns`), or ``None``.
            cfg_scale: classifier-free guidance scale ``w`` for ``condition`` (0: plain conditional sampling).
            cells: ``(n, 3, 3)`` known lattices (rows are the cell vectors): the lattice is not sampled but held
                at these cells, fed to the network at each step noised to the step's level along one fixed
                noise draw per structure (inpainting by replacement), and written to the output unchanged.
                Needs ``numbers`` or a ``formula``-constrained ``constraint`` sized for the cells, or an atom
                count the cell's volume suits (the sampler draws sizes as usual).
            start: ``(fractional coordinates of each structure, t0)``: instead of drawing from the prior, start
                from these positions noised to level ``t0`` (0 < t0 ≤ 1) and denoise from there in ``steps``
                steps (a restart, as SDEdit: a structure near the answer is re-noised and re-denoised under
                guidance). Needs ``numbers`` matching the coordinates and held ``cells``.
        """
        if sampler not in ("pc", "ode"):
            raise InputError(f"sampler must be 'pc' or 'ode', got {sampler!r}")
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        gen = torch.Generator().manual_seed(int(seed))
        rng = np.random.default_rng(seed)
        constraint = constraint or CompositionConstraint()
        known = set(self.stats.elements) or set(range(1, self.net.config.vocab))
        if numbers is None:
            choices = constraint.atom_count_choices(known, self.stats.max_atoms)
            prior = np.array([self.stats.atom_counts.get(c, 0) for c in choices], dtype=float)
            prior = prior / prior.sum() if prior.sum() > 0 else np.full(len(choices), 1 / len(choices))
            sizes = rng.choice(choices, size=n, p=prior)
            if constraint.formula is not None:
                numbers = [constraint.formula_numbers(int(k)) for k in sizes]
        else:
            sizes = np.array([len(z) for z in numbers])
        fixed_species = numbers is not None
        n_atoms = torch.as_tensor(sizes, dtype=torch.long)
        known_x = known_eps = None
        if cells is not None:
            cells = torch.as_tensor(cells, dtype=torch.float64)
            if cells.shape != (n, 3, 3):
                raise InputError(f"cells must have shape ({n}, 3, 3), got {tuple(cells.shape)}")
            if not bool(torch.isfinite(cells).all()) or bool((torch.linalg.det(cells).abs() < 1e-6).any()):
                raise InputError("a known cell is degenerate (zero volume) or not finite")
        batch_idx = torch.repeat_interleave(torch.arange(n), n_atoms)
        if fixed_species:
            tokens = torch.as_tensor(np.concatenate(numbers), dtype=torch.long)
        else:
            tokens = torch.zeros(int(n_atoms.sum()), dtype=torch.long)
        frac = self.frac_noise.sample_prior(tokens.shape[0], gen)
        x = self.lattice_noise.sample_prior(n, gen)
        if cells is not None:
            known_x, known_eps = self.lattice_noise.encode(cells, n_atoms), x
        t_start = 1.0
        if start is not None:
            positions, t_start = start
            t_start = float(t_start)
            if cells is None or not fixed_species:
                raise InputError("a restart needs the species (numbers) and the cells held")
            if not 0 < t_start <= 1:
                raise InputError(f"a restart's noise level must be within (0, 1], got {t_start}")
            if [len(p) for p in positions] != sizes.tolist():
                raise InputError("the restart positions must have one row per atom of each structure")
            sigma0 = self.frac_noise.sigma(torch.tensor(t_start, dtype=torch.float64))
            start_frac = torch.as_tensor(np.concatenate(positions), dtype=torch.float64)
            frac = torch.remainder(start_frac + sigma0 * torch.randn(frac.shape, generator=gen, dtype=frac.dtype), 1.0)
        times = torch.linspace(t_start, 0.0, steps + 1, dtype=torch.float64)
        guides = [] if guidance is None else list(guidance) if isinstance(guidance, list | tuple) else [guidance]
        for k in range(steps):
            t, t_prev = float(times[k]), float(times[k + 1])
            dt = t - t_prev
            t_vec = torch.full((n,), t, dtype=torch.float64)
            sigma = self.frac_noise.sigma(torch.tensor(t, dtype=torch.float64))
            norm = self.frac_noise.score_norm(sigma)
            if known_x is not None:
                ab = self.lattice_noise.alpha_bar(torch.tensor(t, dtype=torch.float64))
                x = ab.sqrt() * known_x + (1 - ab).sqrt() * known_eps
            if sampler == "pc":
                frac_out, _, _ = self._predict(tokens, frac, x, n_atoms, batch_idx, t_vec, condition, cfg_scale)
                frac = self.frac_noise.langevin_step(frac, frac_out.double() * norm, t, corrector_snr, gen)
            frac_out, eps, logits = self._predict(tokens, frac, x, n_atoms, batch_idx, t_vec, condition, cfg_scale)
            score, eps = frac_out.double() * norm, eps.double()
            for term in guides:
                if term.active(t):
                    score, eps = self._guide(
                        term, tokens, logits, frac, x, score, eps, sigma, norm, batch_idx, t, known_x
                    )
            frac = self.frac_noise.reverse_step(frac, score, t, dt, gen, ode=sampler == "ode")
            x = self.lattice_noise.reverse_step(x, eps, t, t_prev, gen, ode=sampler == "ode")
            if not fixed_species:
                masked = tokens == MASK
                p = self.species_noise.reveal_probability(t, t_prev)
                reveal = masked & (torch.rand(tokens.shape, generator=gen, dtype=torch.float64) < p)
                if reveal.any():
                    tokens = constraint.reveal(logits.double(), tokens, batch_idx, reveal, known, gen)
            if progress is not None:
                progress(k + 1, steps)
        if known_x is None:
            cells = self.lattice_noise.decode(x, n_atoms)
        out = []
        for b in range(n):
            sel = batch_idx == b
            out.append(Structure(tokens[sel].numpy(), frac[sel].numpy(), cells[b].numpy()))
        return out

    def _guide(self, guidance, tokens, logits, frac, x, score, eps, sigma, norm, batch_idx, t, known_x=None):
        """Add one guidance term's directions at the denoised estimate to the scores (see its module); with
        ``known_x`` (held lattices) the estimate's lattice is the known one."""
        n_atoms = torch.bincount(batch_idx, minlength=x.shape[0])
        ab = self.lattice_noise.alpha_bar(torch.tensor(t, dtype=torch.float64))
        species = torch.where(tokens == MASK, logits[:, 1:].argmax(-1) + 1, tokens)
        with torch.enable_grad():
            frac0 = torch.remainder(frac + sigma * sigma * score, 1.0).detach().requires_grad_()
            if known_x is None:
                x0 = ((x - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)).clamp(-6, 6).detach().requires_grad_()
            else:
                x0 = known_x.detach().clone().requires_grad_()
            # the symmetric square root of G by a matrix exponential: differentiable also for cubic cells,
            # where the eigenvector derivatives used by decode() are undefined
            log_g = unvech(x0 * self.lattice_noise.std + self.lattice_noise.mean)
            cell0 = torch.linalg.matrix_exp(0.5 * log_g) * n_atoms.double().pow(1.0 / 3.0).view(-1, 1, 1)
            pbc = torch.ones(x.shape[0], 3, dtype=torch.bool)
            d_frac, d_x = guidance.gradients(StructureBatch(species, frac0, cell0, batch_idx, pbc), x0, t)
        score = score - guidance.strength * norm * d_frac
        eps = eps + guidance.strength * d_x
        return score, eps

    # --- persistence -------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {
            "kind": "crystal_diffusion",
            "format_version": 1,
            "net": dataclasses.asdict(self.net.config),
            "stats": {
                **dataclasses.asdict(self.stats),
                "atom_counts": {str(k): v for k, v in self.stats.atom_counts.items()},
            },
            "sigma_min": self.frac_noise.sigma_min,
            "sigma_max": self.frac_noise.sigma_max,
        }

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> None:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``."""
        save_module(self, self.config_dict(), directory, extra)

    @classmethod
    def from_config(cls, config: dict) -> CrystalDiffusion:
        if config.get("kind") != "crystal_diffusion":
            raise InputError(f"not a crystal diffusion model (kind {config.get('kind')!r})")
        stats = dict(config["stats"])
        stats["atom_counts"] = {int(k): int(v) for k, v in stats["atom_counts"].items()}
        return cls(CrystalNetConfig(**config["net"]), DataStatistics(**stats), config["sigma_min"], config["sigma_max"])

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CrystalDiffusion:
        """Load a model saved by :meth:`save` (evaluation mode)."""
        return load_module(cls, directory)
