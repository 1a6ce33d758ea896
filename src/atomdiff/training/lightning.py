"""Lightning wrappers of atomdiff's models: optimiser, schedule, EMA weights, logging hooks.

EMA: a copy of the network's state is averaged after every optimizer step
(``ema ← d·ema + (1 − d)·θ`` with ``d = min(ema_decay, (1 + n)/(10 + n))`` after ``n`` updates, so early
averages are not dominated by the random initialisation). It is stored in every checkpoint under ``"ema"``
and restored on resume, swapped in for validation, and is what gets exported.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import nn

from atomdiff.diffusion.crystal import CrystalDiffusion, LossWeights
from atomdiff.structure.batch import StructureBatch
from atomdiff.training.datamodules import ConditionedBatch

STEP_DELAY_ENV = "ATOMDIFF_TRAIN_STEP_DELAY"


class EMA:
    """Exponential moving average of a module's state (floating tensors averaged, others copied)."""

    def __init__(self, module: nn.Module, decay: float = 0.999):
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if s.device != v.device:
                s = self.shadow[k] = s.to(v.device)
            if s.is_floating_point():
                s.lerp_(v.detach().to(s.dtype), 1.0 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        shadow = {k: v.detach().cpu().clone() for k, v in self.shadow.items()}
        return {"decay": self.decay, "updates": self.updates, "shadow": shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state does not match the network (keys {sorted(missing)[:5]})")
        self.updates = int(state["updates"])
        self.shadow = {k: v.detach().clone() for k, v in state["shadow"].items()}

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[None]:
        """Temporarily load the EMA state into ``module``."""
        backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.shadow)
        try:
            yield
        finally:
            module.load_state_dict(backup)


class WarmupSchedule:
    """LR factor: linear warm-up over ``warmup`` steps, then constant or cosine decay to 0 at ``total``."""

    def __init__(self, warmup: int, total: float, cosine: bool = True):
        self.warmup, self.total, self.cosine = int(warmup), float(total), bool(cosine)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine or not math.isfinite(self.total) or self.total <= self.warmup:
            return 1.0
        progress = min(1.0, (step - self.warmup) / (self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: WarmupSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    """``schedule`` as a step-wise scheduler whose checkpointed state is only the step count.

    The schedule is wrapped in a plain function because ``LambdaLR`` saves the attributes of a callable *object*
    and restores them on resume: a run resumed with a larger ``--max-steps`` would keep the old total and train
    at a learning rate of 0 (measured).
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step))


class EMATrainingModule(L.LightningModule):
    """Trains a model (an object with a ``net`` and a ``config_dict()``) with AdamW, a warm-up schedule and EMA
    weights; subclasses say how to compute the loss of a batch (:meth:`compute_loss`).

    The noise of each step is drawn from a generator seeded by ``(seed, global_step, rank)``, so runs are
    reproducible and a resumed run draws the noise an uninterrupted one would. Subclasses call
    ``save_hyperparameters(ignore=["model"])`` with at least ``lr``, ``weight_decay``, ``warmup_steps``,
    ``cosine`` and ``seed``.
    """

    def __init__(self, model: nn.Module, ema_decay: float = 0.999):
        super().__init__()
        self.model = model
        self.ema = EMA(model.net, ema_decay)
        self.training_info: dict[str, Any] = {}  # JSON-able facts about the run, stored in checkpoints
        self._seconds_before = 0.0
        self._t0: float | None = None

    def compute_loss(self, batch: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Named loss terms of ``batch``; ``"loss"`` is the one optimised."""
        raise NotImplementedError

    # --- steps -------------------------------------------------------------------------------------------
    def _generator(self, offset: int = 0) -> torch.Generator:
        seed = (self.hparams.seed * 1_000_003 + self.global_step * 1009 + self.global_rank + offset) % 2**63
        return torch.Generator().manual_seed(seed)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch, self._generator())
        for k, v in out.items():
            self.log(f"train/{k}", v.detach(), prog_bar=k == "loss", batch_size=len(batch))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch))
        return out["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        out = self.compute_loss(batch, self._generator(7919 * batch_idx))
        for k, v in out.items():
            self.log(f"val/{k}", v, prog_bar=k == "loss", batch_size=len(batch), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._ema_ctx = self.ema.swapped_in(self.model.net)
        self._ema_ctx.__enter__()

    def on_validation_epoch_end(self) -> None:
        self._ema_ctx.__exit__(None, None, None)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.model.net)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: the network (subclasses add training-only parameters)."""
        return list(self.model.net.parameters())

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.AdamW(self.trainable_parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        total = float(self.trainer.estimated_stepping_batches)
        sched = lr_scheduler(opt, WarmupSchedule(hp.warmup_steps, total, hp.cosine))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # --- time and checkpoints ----------------------------------------------------------------------------
    @property
    def train_seconds(self) -> float:
        """Wall time spent training, summed over resumed runs."""
        return self._seconds_before + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ema"] = self.ema.state_dict()
        checkpoint["atomdiff"] = {
            "model_config": self.model.config_dict(),
            "train_seconds": self.train_seconds,
            "training": self.training_info,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "ema" not in checkpoint:
            raise KeyError("checkpoint has no EMA state (not written by atomdiff training?)")
        self.ema.load_state_dict(checkpoint["ema"])
        self._seconds_before = float(checkpoint.get("atomdiff", {}).get("train_seconds", 0.0))
        self.resumed_from_step = int(checkpoint.get("global_step", 0))
        self.resumed_ema_updates = self.ema.updates


class CrystalDiffusionModule(EMATrainingModule):
    """Trains a :class:`CrystalDiffusion` (structure prediction on a fraction ``csp_fraction`` of each batch)."""

    def __init__(
        self,
        model: CrystalDiffusion,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        cosine: bool = True,
        csp_fraction: float = 0.5,
        ema_decay: float = 0.999,
        weight_frac: float = 1.0,
        weight_lattice: float = 1.0,
        weight_species: float = 1.0,
        seed: int = 0,
        cond_dropout: float = 0.15,
    ):
        super().__init__(model, ema_decay)
        self.save_hyperparameters(ignore=["model"])
        self.loss_weights = LossWeights(weight_frac, weight_lattice, weight_species)

    def compute_loss(
        self, batch: StructureBatch | ConditionedBatch, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        condition = None
        if isinstance(batch, ConditionedBatch):
            # one of each structure's simulated patterns, and none (the zero vector) for a cond_dropout fraction
            n = len(batch)
            pick = torch.randint(batch.features.shape[1], (n,), generator=generator).to(batch.features.device)
            rows = torch.arange(n, device=pick.device)
            condition = self.model.encode_patterns(batch.features[rows, pick], batch.radiation[rows, pick])
            keep = torch.rand(n, generator=generator) >= self.hparams.cond_dropout
            condition = condition * keep.to(condition).unsqueeze(-1)
            batch = batch.structures
        return self.model.loss(batch, self.hparams.csp_fraction, self.loss_weights, generator, condition)


class NoiseLevelWeighting(nn.Module):
    """A learned log-scale ``u(σ)`` of the loss at each noise level: the loss ``L`` becomes ``L / e^u + u``,
    whose minimum over ``u`` is at ``e^u = E[L | σ]`` (Karras et al., "Analyzing and improving the training
    dynamics of diffusion models", CVPR 2024, §B.2). Every noise level then contributes a loss of about one,
    whatever its irreducible part; the scale is a training-only parameter and is not exported.

    ``u`` is linear in fixed random Fourier features of ``log σ`` (seeded, so runs are reproducible), zero at
    the start.
    """

    def __init__(self, features: int = 64, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * torch.randn(features, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(features, generator=g))
        self.linear = nn.Linear(features, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        c = torch.log(sigma.float()).unsqueeze(-1) / 4.0
        return self.linear(math.sqrt(2.0) * torch.cos(c * self.freqs + self.phases)).squeeze(-1)


class LocalModelModule(EMATrainingModule):
    """Trains a model whose ``loss(batch, generator)`` needs nothing else (amorphous diffusion, surrogates).

    With ``noise_weighting`` (models with ``loss_terms(batch, generator) -> (per-structure loss, σ)`` only), each
    term is scaled by a learned :class:`NoiseLevelWeighting`; ``train/edm`` logs the unscaled mean.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        cosine: bool = True,
        ema_decay: float = 0.999,
        seed: int = 0,
        noise_weighting: bool = False,
    ):
        super().__init__(model, ema_decay)
        self.save_hyperparameters(ignore=["model"])
        if noise_weighting and not hasattr(model, "loss_terms"):
            raise ValueError(f"{type(model).__name__} has no per-noise-level loss terms to weight")
        self.weighting = NoiseLevelWeighting(seed=seed) if noise_weighting else None

    def trainable_parameters(self) -> list[nn.Parameter]:
        extra = list(self.weighting.parameters()) if self.weighting is not None else []
        return super().trainable_parameters() + extra

    def compute_loss(self, batch: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.weighting is None:
            return self.model.loss(batch, generator)
        per_structure, sigma = self.model.loss_terms(batch, generator)
        u = self.weighting(sigma).to(per_structure.dtype)
        return {"loss": (per_structure * torch.exp(-u) + u).mean(), "edm": per_structure.mean()}


class StepDelay(L.Callback):
    """Test hook: sleep after every training step, to make a run slow enough to kill mid-way.

    Enabled by the environment variable ``ATOMDIFF_TRAIN_STEP_DELAY`` (seconds); never set it otherwise.
    """

    def __init__(self, seconds: float):
        self.seconds = float(seconds)

    @classmethod
    def from_env(cls) -> StepDelay | None:
        value = os.environ.get(STEP_DELAY_ENV, "")
        return cls(float(value)) if value.strip() else None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        time.sleep(self.seconds)


class FinalCheckpoint(L.Callback):
    """Save ``last.ckpt`` when training stops at a step that is not a multiple of ``every``.

    ``ModelCheckpoint(every_n_train_steps=every, save_last=True)`` only writes ``last.ckpt`` with a periodic
    checkpoint, so without this a resumed run could lose the final steps.
    """

    def __init__(self, last_path: str | os.PathLike, every: int):
        self.last_path, self.every = str(last_path), int(every)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step > self.every and step % self.every != 0:
            trainer.save_checkpoint(self.last_path, weights_only=False)
