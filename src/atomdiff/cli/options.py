"""Option types shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from atomdiff.errors import InputError

Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
BoundaryElement = Annotated[str, typer.Option(help="Element (fcc or bcc metal), e.g. W or Cu.")]
BoundarySigma = Annotated[int, typer.Option(min=1, help="CSL Σ of the boundary.")]
BoundaryPlane = Annotated[str, typer.Option(help="Boundary plane, e.g. 1,0,0.")]
BoundaryKind = Annotated[str, typer.Option(help="twist or tilt.")]
BoundaryAxis = Annotated[str | None, typer.Option(help="Rotation axis (a tilt needs one; twist: the plane normal).")]
FinishSteps = Annotated[
    int,
    typer.Option(
        min=0, help="Zero-temperature finish: this many denoiser fixed-point iterations at --finish-sigma (0: off)."
    ),
]
FinishSigma = Annotated[float, typer.Option(min=0.001, help="Noise level (Å) of the zero-temperature finish.")]
FinishGuidance = Annotated[
    float, typer.Option(min=0.0, help="Guidance strength during the finish, as a fraction of --guidance.")
]
Restarts = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Re-noise the guided result to --restart-sigma and denoise it again this many times; default 2 with a "
        "target, else 0.",
    ),
]
RestartSigma = Annotated[float, typer.Option(min=0.001, help="Noise level (Å) a restart re-noises to.")]
RestartSteps = Annotated[int, typer.Option(min=1, help="Noise levels of each restart.")]
StructurePath = Annotated[
    Path, typer.Argument(help="Structure file: CIF, extxyz/xyz, POSCAR/.vasp, or CSV of CIFs (first row).")
]

CfgScale = Annotated[
    float,
    typer.Option("--cfg", min=0.0, help="Classifier-free guidance scale of a pattern-conditioned model."),
]
GuidanceInterval = Annotated[
    str | None,
    typer.Option(
        help="lo,hi: apply --guidance only at diffusion times lo <= t <= hi (1 is pure noise); default: all steps."
    ),
]
Neutron = Annotated[bool, typer.Option("--neutron/--xray", help="Radiation (default X-rays).")]
Wavelength = Annotated[str, typer.Option(help="Wavelength: a name (CuKa1, CuKa, MoKa1, ...) or a value in Å.")]
PatternAxis = Annotated[str | None, typer.Option(help="two_theta or q (default: from the file, else two_theta).")]
Texture = Annotated[
    str | None,
    typer.Option(help="h,k,l: also refine a March–Dollase preferred-orientation ratio along this direction."),
]


def parse_triple(text: str | None, option: str) -> tuple[int, int, int] | None:
    """``"1,0,0"`` → ``(1, 0, 0)`` (Miller indices, directions, repeats); ``None`` when not given."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise InputError(f"{option}: write three integers like 1,0,0; got {text!r}") from None
    if len(values) != 3:
        raise InputError(f"{option}: write three integers like 1,0,0; got {text!r}")
    return values  # type: ignore[return-value]


def parse_texture(text: str | None) -> tuple[float, float, float] | None:
    """``--texture "0,0,1"`` → ``(0.0, 0.0, 1.0)``; ``None`` when not given."""
    values = parse_floats(text, "--texture")
    if values is None:
        return None
    if len(values) != 3 or not any(values):
        raise InputError(f"--texture: expected a direction h,k,l (not all zero), got {text!r}")
    return (values[0], values[1], values[2])


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


def parse_interval(text: str | None) -> tuple[float, float] | None:
    """``--guidance-interval "0.2,0.8"`` → ``(0.2, 0.8)``; ``None`` when not given (the model checks the range)."""
    values = parse_floats(text, "--guidance-interval")
    if values is None:
        return None
    if len(values) != 2:
        raise InputError(f"--guidance-interval: expected two times lo,hi, got {text!r}")
    return (values[0], values[1])


def check_output_suffix(path: Path, allowed: tuple[str, ...], what: str) -> None:
    if path.suffix.lower() not in allowed:
        raise InputError(f"{what} must end in one of {', '.join(allowed)}", path=str(path))


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where the network runs: cpu, cuda or cuda:N (the sampler's state and random draws stay on the CPU, "
        "so a seed draws the same noise everywhere).",
    ),
]


def network_on(diffusion: Any, device: str) -> Any:
    """``diffusion`` with its network moved to ``device`` (checked: a clear error for an unknown or absent one)."""
    import torch

    try:
        target = torch.device(device)
    except RuntimeError:
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here")
    if target.type not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    diffusion.net.to(target)
    return diffusion


#: ``atomdiff generate``'s repulsion strength: every one of 500 perov5 de novo samples valid (97.8 % without), the
#: same composition validity and match rate within noise (docs/crystal_diffusion.md, session 30). The benchmarks
#: (``atomdiff evaluate``) default to 0, measuring the model alone as DiffCSP does.
DEFAULT_REPULSION = 2.0

RepulsionOpt = Annotated[
    float,
    typer.Option(
        "--repulsion",
        min=0.0,
        help="Keep atoms of the denoised estimate ≥ 1 Å apart while sampling, with this strength relative to the "
        "score (0: off; 2 made every perov5 de novo sample valid, docs/crystal_diffusion.md).",
    ),
]
