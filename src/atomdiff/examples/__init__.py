"""Example structures shipped with atomdiff."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def example_path(name: str) -> Path:
    """Path of a bundled example file, e.g. ``example_path("kesterite_Cu2ZnSnS4.cif")``."""
    return Path(str(files("atomdiff.examples") / name))
