"""Every knob of a training run, as JSON-serialisable dataclasses (one per kind of model).

The command line (:mod:`atomdiff.cli.train`) reads config files and ``--set`` overrides into a
:class:`RunConfig` subclass; the training code only ever sees the resolved object.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Self

from atomdiff.errors import InputError

SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass
class RunConfig:
    """Settings shared by every training run (data, optimisation, bookkeeping, hardware).

    Data:
        data: training files or folders; val_data: validation files (when empty, ``val_fraction`` of ``data``
        is held out instead); limit: read at most this many structures from each data file (``None``: all).
    Optimisation:
        batch_size: structures per batch and device; lr, weight_decay: AdamW;
        warmup_steps: linear warm-up; schedule: ``cosine`` (to zero at the last step) or ``constant``;
        grad_clip: gradient-norm clipping (0: off); max_steps, max_epochs: stopping (-1: no limit);
        ema_decay: decay of the exponential moving average of the weights that is exported.
    Bookkeeping:
        ckpt_every: optimizer steps between checkpoints; val_every: steps between validations
        (0: once per epoch); seed: seeds model initialisation, shuffling and noise.
    Hardware:
        accelerator (``auto``, ``cpu``, ``gpu``), devices per node, num_nodes, precision
        (Lightning's ``32-true``, ``bf16-mixed`` ...), num_workers of the data loaders, progress_bar;
        cpu_threads: torch threads per process (0: torch's default). Set 1 when several jobs share few
        cores: spinning threads of an oversubscribed CPU can make small models 10-40x slower.
    """

    data: list[str] = dataclasses.field(default_factory=list)
    val_data: list[str] = dataclasses.field(default_factory=list)
    limit: int | None = None
    val_fraction: float = 0.0
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: str = "cosine"
    grad_clip: float = 1.0
    max_steps: int = 20_000
    max_epochs: int = -1
    ema_decay: float = 0.999
    ckpt_every: int = 500
    val_every: int = 0
    seed: int = 0
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    num_workers: int = 0
    cpu_threads: int = 0
    progress_bar: bool = True

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """Field name → type (``int``, ``float``, ``str``, ``bool``, ``list[str]``, ``int | None``)."""
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: RunConfig | None = None) -> Self:
        """``base`` (or the defaults) with ``values`` applied; unknown keys and wrong types are input errors."""
        out = dataclasses.asdict(base) if base is not None else dataclasses.asdict(cls())
        types = cls.field_types()
        for key, value in values.items():
            if key not in types:
                raise InputError(f"unknown training setting {key!r}; known: {', '.join(types)}")
            out[key] = _check_type(key, value, types[key])
        return cls(**{k: v for k, v in out.items() if k in types})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise :class:`InputError` for settings that cannot work."""
        if not self.data:
            raise InputError("no training data: pass --data FILE (or 'data' in the config file)")
        positive = [k for k in ("hidden", "layers", "batch_size", "ckpt_every", "num_nodes") if hasattr(self, k)]
        for key in positive:
            if getattr(self, key) < 1:
                raise InputError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.devices == 0 or self.devices < -1:
            raise InputError(f"devices must be at least 1 (or -1 for all), got {self.devices}")
        if self.max_steps < 1 and self.max_epochs < 1:
            raise InputError("set max_steps or max_epochs (both are unlimited)")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be at least 1, got {self.limit}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for key in ("warmup_steps", "val_every", "num_workers", "cpu_threads", "grad_clip", "weight_decay"):
            if getattr(self, key) < 0:
                raise InputError(f"{key} must not be negative, got {getattr(self, key)}")


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """Settings of ``atomdiff train crystal`` (see :class:`RunConfig` for the shared ones).

    Model:
        hidden, layers: width and depth of the score network.
    Loss:
        csp_fraction: fraction of structures trained with known species (structure prediction);
        weight_frac, weight_lattice, weight_species: weights of the three loss terms.
    Pattern conditioning (issue: solve a powder pattern):
        patterns: simulated powder patterns per structure with randomised instruments
            (:mod:`atomdiff.data.generate.patterns`); > 0 trains a pattern-conditioned model with a pattern
            encoder; each step draws one of a structure's patterns.
        cond_dropout: fraction of structures trained without their pattern (classifier-free guidance).
        neutron_fraction: fraction of the simulated patterns that are neutron patterns.
    Start:
        init: fine-tune from a crystal model (shipped name or folder): its network shape and data statistics
            replace hidden/layers and the statistics of ``data``; a pattern encoder is added when
            ``patterns`` > 0 (its conditioning layer starts at zero, so training starts from the unconditional
            model).
    """

    hidden: int = 256
    layers: int = 4
    csp_fraction: float = 0.5
    weight_frac: float = 1.0
    weight_lattice: float = 1.0
    weight_species: float = 1.0
    patterns: int = 0
    cond_dropout: float = 0.15
    neutron_fraction: float = 0.2
    init: str = ""

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.csp_fraction <= 1.0:
            raise InputError(f"csp_fraction must be in [0, 1], got {self.csp_fraction}")
        if self.patterns < 0:
            raise InputError(f"patterns must not be negative, got {self.patterns}")
        for key in ("cond_dropout", "neutron_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise InputError(f"{key} must be in [0, 1), got {getattr(self, key)}")


@dataclasses.dataclass
class LocalTrainConfig(RunConfig):
    """Settings of the local equivariant models (``atomdiff train amorphous`` and ``atomdiff train xanes``).

    Data: ``data`` are data-set folders (``ROOT/poscar/<split>/...``, read with ``split``; for XANES also
    ``ROOT/xanes/<split>/...``) or, for amorphous diffusion, structure files (extxyz, CIF, POSCAR, CSV);
    ``val_split`` (when set) reads the same folders' other split for validation.
    Model: hidden, layers, cutoff (Å), n_rbf of :class:`~atomdiff.models.local.LocalNetConfig`; absorber (element
    symbol) and edge of a XANES surrogate; sigma_max (Å) of the position noise.
    Amorphous diffusion only: ``noise_weighting`` divides the loss at each noise level by a learned scale
    (:class:`~atomdiff.training.lightning.NoiseLevelWeighting`); ``balance_density`` repeats the structures of
    rarer densities (bins of 0.05 g/cm³) so that every density is drawn about equally often; ``init`` starts from
    the weights of a prior (folder or shipped name; its network shape replaces hidden/layers/cutoff/n_rbf).
    """

    split: str = "train"
    val_split: str = ""
    batch_size: int = 4
    lr: float = 1e-3
    max_steps: int = 5000
    hidden: int = 64
    layers: int = 4
    cutoff: float = 3.0
    n_rbf: int = 16
    sigma_max: float = 3.0
    absorber: str = "C"
    edge: str = "K"
    noise_weighting: bool = False
    balance_density: bool = False
    init: str = ""

    def validate(self) -> None:
        super().validate()
        if self.cutoff <= 0 or self.sigma_max <= 0:
            raise InputError("cutoff and sigma_max must be positive")


@dataclasses.dataclass
class XanesTrainConfig(LocalTrainConfig):
    """:class:`LocalTrainConfig` with the defaults of a XANES surrogate (a wider cutoff, more steps)."""

    cutoff: float = 3.5
    max_steps: int = 8000


def _check_type(key: str, value: Any, kind: Any) -> Any:
    """Return ``value`` as ``kind`` (ints are accepted for floats, a string for a list) or raise."""
    if kind == list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif kind == int | None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise InputError(f"training setting {key!r} must be {_type_name(kind)}, got {value!r}")


def _type_name(kind: Any) -> str:
    return {list[str]: "a list of strings", int | None: "an integer or null"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


@dataclasses.dataclass
class VoxelTrainConfig(RunConfig):
    """Settings of ``atomdiff voxel train`` (see :class:`RunConfig` for the shared ones).

    Data: ``data`` are structure files (extxyz, CIF, ...) whose structures all fill one and the same box.
    Grid: ``grid`` (``"48"`` or ``"48,48,48"``; empty: from ``spacing``, Å, rounded up to a multiple of the
    U-Net's downsampling factor), ``sigma`` (Å) of the Gaussians, ``species`` (channels; empty: the elements
    of the data, by atomic number).
    Model: ``base``, ``mults`` (``"1,2,2"``), ``blocks``, ``time_dim`` of the U-Net; ``prediction`` (``v`` or
    ``eps``) of the noise process — ``v`` by default: with ``eps`` the estimate of the clean field at the
    highest noise levels divides the network's error by sqrt(ᾱ) ≈ 10⁻³, saturates at the clip, and the
    field's mean (the atom count) drifts to "full" during sampling (measured: every voxel occupied);
    ``init``: a voxel model folder (or shipped name) whose grid and network weights start the run
    (fine-tuning; its U-Net settings replace ``base``/``mults``/..., ``prediction`` still applies);
    ``occupied_weight``: the loss weight of a voxel is ``1 + occupied_weight × density`` (normalised per box),
    so that the few voxels holding atoms are not drowned by empty space.
    Classes: ``condition`` names an ``info`` key of the structures (e.g. ``phase`` in ``atomdiff data ordered``
    output) whose values become the class labels the network is conditioned on (empty: unconditional);
    ``label_dropout`` is the fraction of labels dropped during training for classifier-free guidance.
    """

    batch_size: int = 16
    lr: float = 2e-4
    max_steps: int = 20_000
    warmup_steps: int = 500
    grid: str = ""
    spacing: float = 0.25
    sigma: float = 0.3
    species: list[str] = dataclasses.field(default_factory=list)
    base: int = 32
    mults: str = "1,2,2,2"
    blocks: int = 2
    time_dim: int = 128
    prediction: str = "v"
    init: str = ""
    occupied_weight: float = 0.0
    condition: str = ""
    label_dropout: float = 0.1

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.label_dropout < 1.0:
            raise InputError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.spacing <= 0 or self.sigma <= 0:
            raise InputError("spacing and sigma must be positive (Å)")
        for key in ("base", "blocks", "time_dim"):
            if getattr(self, key) < 1:
                raise InputError(f"{key} must be at least 1, got {getattr(self, key)}")
        try:
            mults = [int(m) for m in self.mults.split(",")]
        except ValueError:
            raise InputError(f"mults: write channel multipliers like 1,2,2, got {self.mults!r}") from None
        if not mults or min(mults) < 1:
            raise InputError(f"mults: write positive channel multipliers like 1,2,2, got {self.mults!r}")
