"""Export the EMA weights of a training run as a model folder (safetensors + JSON) of the run's model kind."""

from __future__ import annotations

import copy
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atomdiff.diffusion.amorphous import AmorphousDiffusion
from atomdiff.diffusion.crystal import CrystalDiffusion
from atomdiff.diffusion.voxel import VoxelDiffusion
from atomdiff.errors import InputError
from atomdiff.models.xanes import XanesSurrogate

MODEL_KINDS: dict[str, type] = {
    "crystal_diffusion": CrystalDiffusion,
    "amorphous_diffusion": AmorphousDiffusion,
    "xanes_surrogate": XanesSurrogate,
    "voxel_diffusion": VoxelDiffusion,
}


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """A model of the kind named by ``config["kind"]``, built from its configuration."""
    kind = config.get("kind")
    if kind not in MODEL_KINDS:
        raise InputError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind].from_config(config)


def checkpoint_path(run_dir_or_ckpt: str | os.PathLike) -> Path:
    """``RUN_DIR/checkpoints/last.ckpt`` for a run directory, or the given ``.ckpt`` file."""
    path = Path(run_dir_or_ckpt)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise InputError("no checkpoint found (expected RUN_DIR/checkpoints/last.ckpt or a .ckpt file)", path=str(path))
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint, loaded on the CPU without unpickling arbitrary objects."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise InputError(f"cannot read checkpoint: {type(exc).__name__}: {exc}", path=str(path)) from None
    if "ema" not in ckpt or "atomdiff" not in ckpt:
        raise InputError("not an atomdiff training checkpoint (no EMA state)", path=str(path))
    return ckpt


def hardware_info(accelerator: str, devices: int, num_nodes: int, world_size: int) -> dict[str, Any]:
    """What the run ran on, for the exported ``config.json``."""
    info: dict[str, Any] = {
        "accelerator": accelerator,
        "devices_per_node": devices,
        "num_nodes": num_nodes,
        "world_size": world_size,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": str(torch.__version__),
    }
    if accelerator in ("cuda", "gpu") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save_ema_model(
    model: dict[str, Any] | nn.Module,
    ema_state: dict[str, torch.Tensor],
    out_dir: str | os.PathLike,
    training: dict,
) -> Path:
    """Load ``ema_state`` into (a copy of) ``model`` and save it to ``out_dir``.

    ``model`` is a model's ``config_dict()``, or a model of the same configuration to copy (cheaper than
    building one: the noise processes tabulate their normalisation on construction).
    """
    if isinstance(model, nn.Module):
        model = copy.deepcopy(model).cpu()
    else:
        model = model_from_config(model)
    model.net.load_state_dict({k: v.detach().cpu() for k, v in ema_state.items()})
    model.save(out_dir, extra={"training": training})
    return Path(out_dir)


def export(run_dir_or_ckpt: str | os.PathLike, out_dir: str | os.PathLike, template: nn.Module | None = None) -> Path:
    """Write the EMA weights of a run's last checkpoint (or of a given checkpoint) to ``out_dir``.

    ``out_dir`` receives ``model.safetensors`` and ``config.json``; the latter's ``"training"`` entry holds
    the command, settings, optimizer steps, epochs, wall time and hardware of the run. ``template``: a model
    of the checkpoint's configuration to copy instead of building one (the training run passes its own).
    """
    ckpt = read_checkpoint(checkpoint_path(run_dir_or_ckpt))
    meta = ckpt["atomdiff"]
    training = {
        **meta.get("training", {}),
        "steps": int(ckpt.get("global_step", 0)),
        "epochs": int(ckpt.get("epoch", 0)),
        "wall_time_s": round(float(meta.get("train_seconds", 0.0)), 3),
        "ema_decay": float(ckpt["ema"]["decay"]),
        "ema_updates": int(ckpt["ema"]["updates"]),
        "lightning": ckpt.get("pytorch-lightning_version"),
    }
    if template is not None and template.config_dict() != meta["model_config"]:
        raise InputError("the template model does not match the checkpoint's configuration")
    model = template if template is not None else meta["model_config"]
    return save_ema_model(model, ckpt["ema"]["shadow"], out_dir, training)
