"""Option types shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from atomdiff.errors import InputError

Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
StructurePath = Annotated[
    Path, typer.Argument(help="Structure file: CIF, extxyz/xyz, POSCAR/.vasp, or CSV of CIFs (first row).")
]


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """``"1,2.5,3"`` → ``[1.0, 2.5, 3.0]``; a clear error naming the option otherwise."""
    if text is None or text == "":
        return None
    out = []
    for item in text.split(","):
        try:
            out.append(float(item))
        except ValueError:
            raise InputError(f"{what}: expected comma-separated numbers, got {item!r}") from None
    return out


def check_output_suffix(path: Path, allowed: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in allowed:
        raise InputError(f"{what} must end in one of {', '.join(allowed)}", path=str(path))
