"""Saving and loading networks as ``model.safetensors`` plus ``config.json`` (never pickles).

A model class provides ``config_dict()`` (JSON-able, with a ``"kind"``), ``from_config(dict)`` and a ``net``
attribute holding the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from atomdiff.errors import InputError
from atomdiff.files import atomic_path


def save_module(module: nn.Module, config: dict, directory: str | os.PathLike, extra: dict | None = None) -> None:
    """``module.net``'s weights as safetensors and ``config`` (+ ``extra``) as JSON, written atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.net.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_path(directory / "config.json") as tmp:
        tmp.write_text(json.dumps({**config, **(extra or {})}, indent=2) + "\n")


def load_module(cls, directory: str | os.PathLike):
    """Build ``cls.from_config`` from ``config.json`` and load ``model.safetensors`` into its ``net``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise InputError(f"model folder lacks {name}", path=str(directory))
    try:
        config = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise InputError(
            f"config.json is not valid JSON ({exc.msg})", path=str(directory / "config.json"), line=exc.lineno
        ) from None
    model = cls.from_config(config)
    model.net.load_state_dict(load_file(str(directory / "model.safetensors")))
    model.eval()
    return model
