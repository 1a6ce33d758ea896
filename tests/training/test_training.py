"""Training: export and sampling, reproducibility, kill-and-resume with EMA, CPU DDP, settings precedence."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from atomdiff.cli.main import run
from atomdiff.cli.train import parse_set, resolve_config
from atomdiff.errors import InputError
from atomdiff.structure import Structure, write_structures

TINY = ["--hidden", "32", "--layers", "1", "--batch-size", "4", "--set", "progress_bar=false"]


def _structures(n: int = 16, seed: int = 0) -> list[Structure]:
    """Half perovskite-like 5-atom cubic cells, half 4-atom hexagonal carbon cells, slightly rattled."""
    rng = np.random.default_rng(seed)
    out = []
    perovskite = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    graphite = np.array([[0, 0, 0.25], [0, 0, 0.75], [1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
    for k in range(n):
        if k % 2 == 0:
            a_site, b_site = [(38, 22), (56, 22), (20, 40)][k % 3]
            frac = perovskite + rng.normal(0, 0.01, (5, 3))
            out.append(Structure([a_site, b_site, 8, 8, 8], frac % 1, np.eye(3) * rng.uniform(3.8, 4.2)))
        else:
            a, c = rng.uniform(2.4, 2.6), rng.uniform(6.5, 7.0)
            cell = np.array([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]])
            out.append(Structure([6] * 4, (graphite + rng.normal(0, 0.01, (4, 3))) % 1, cell))
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning threads cost 10-40x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "d.csv"
    write_structures(_structures(), path)
    return path


def _metrics(run_dir: Path, version: int = 0) -> list[dict[str, str]]:
    path = run_dir / "logs" / f"version_{version}" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get("train/loss")]


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1", **extra})
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID"):
        env.pop(key, None)
    return env


CLI = [sys.executable, "-m", "atomdiff.cli.main", "train", "crystal"]


def test_train_export_sample_reproducible(data_csv, tmp_path):
    from atomdiff.diffusion.crystal import CrystalDiffusion
    from atomdiff.training.export import export

    config = tmp_path / "settings.toml"
    config.write_text('lr = 0.002\nwarmup_steps = 2\ndata = ["does-not-matter.csv"]\n')
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = ["train", "crystal", "--config", str(config), "--data", str(data_csv), "--out", str(out)]
        assert run([*args, *TINY, "--max-steps", "5", "--ckpt-every", "2", "--seed", "3"]) == 0
        runs.append(out)
    a, b = runs
    assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()
    rows = _metrics(a)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("train/loss", "train/frac", "train/lattice"))
    settings = json.loads((a / "config.json").read_text())
    assert settings["lr"] == 0.002 and settings["hidden"] == 32 and settings["data"] == [str(data_csv.resolve())]
    info = json.loads((a / "model" / "config.json").read_text())["training"]
    assert info["steps"] == 5 and info["ema_updates"] == 5 and info["hardware"]["world_size"] == 1
    assert "--max-steps 5" in info["command"] and info["wall_time_s"] > 0
    assert _ckpt(a / "checkpoints" / "last.ckpt")["global_step"] == 5  # final step saved though not a multiple
    assert list((a / "data_cache").glob("d-*.npz"))

    model = CrystalDiffusion.load(a / "model")
    assert model.net.config.hidden == 32
    (s,) = model.sample(1, steps=4, seed=0)
    assert len(s) in (4, 5) and np.isfinite(s.frac).all() and s.volume > 0

    export(a, tmp_path / "again", template=model)  # export from a run folder = the end-of-training export
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (a / "model" / "model.safetensors").read_bytes()


def test_kill_and_resume(data_csv, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "first.log"
    args = [*CLI, "--data", str(data_csv), "--out", str(out), *TINY, "--max-steps", "12", "--ckpt-every", "3"]
    env = _cli_env(ATOMDIFF_TRAIN_STEP_DELAY="0.3")  # test hook: slow steps so the kill lands mid-run
    with open(log, "w") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 150  # generous: the machine may be busy
        while time.monotonic() < deadline and proc.poll() is None:
            rows = _metrics(out)
            if (out / "checkpoints" / "last.ckpt").is_file() and rows and int(rows[-1]["step"]) >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"training ended before it could be killed:\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = _ckpt(out / "checkpoints" / "last.ckpt")
    step = killed["global_step"]
    assert step in (3, 6, 9) and killed["ema"]["updates"] == step
    assert not (out / "model").exists()

    assert run(["train", "crystal", "--data", str(data_csv), "--out", str(out)]) == 2  # would overwrite
    assert run(["train", "crystal", "--out", str(out), "--resume"]) == 0  # settings come from the run

    final = _ckpt(out / "checkpoints" / "last.ckpt")
    assert final["global_step"] == 12
    assert final["ema"]["updates"] == 12  # EMA restored from the checkpoint, then updated 12 - step times
    resumed = _metrics(out, version=1)
    assert int(resumed[0]["step"]) == step and int(resumed[-1]["step"]) == 11
    info = json.loads((out / "model" / "config.json").read_text())["training"]
    assert info["steps"] == 12 and info["ema_updates"] == 12


def test_ddp_on_two_cpu_processes(data_csv, tmp_path):
    out = tmp_path / "ddp"
    args = [*CLI, "--data", str(data_csv), "--out", str(out), *TINY, "--max-steps", "3", "--ckpt-every", "2"]
    args += ["--accelerator", "cpu", "--devices", "2"]
    done = subprocess.run(args, capture_output=True, text=True, env=_cli_env(), timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "distributed_backend=gloo" in done.stdout + done.stderr
    info = json.loads((out / "model" / "config.json").read_text())["training"]
    assert info["steps"] == 3 and info["hardware"]["world_size"] == 2
    assert _ckpt(out / "checkpoints" / "last.ckpt")["global_step"] == 3


def test_settings_precedence(tmp_path):
    (tmp_path / "cfg").mkdir()
    toml = tmp_path / "cfg" / "settings.toml"
    toml.write_text('data = "d.csv"\nbatch_size = 8\nlr = 0.01\nhidden = 48\nlayers = 2\n')
    explicit = {"hidden": 32, "layers": None, "data": None}
    config = resolve_config(tmp_path / "run", False, toml, ["lr=0.02", "hidden=40", "limit=none"], explicit)
    assert config.batch_size == 8  # file over defaults
    assert config.lr == 0.02  # --set over file
    assert config.hidden == 32  # explicit option over --set
    assert config.layers == 2 and config.limit is None
    assert config.data == [str((tmp_path / "cfg" / "d.csv").resolve())]  # relative to the file

    js = tmp_path / "settings.json"
    js.write_text(json.dumps({"max_steps": 7, "progress_bar": False}))
    config = resolve_config(tmp_path / "run", False, js, ["progress_bar=true"], {"max_steps": None})
    assert config.max_steps == 7 and config.progress_bar is True

    assert parse_set(["data=a.csv,b.csv"])["data"] == [str(Path("a.csv").resolve()), str(Path("b.csv").resolve())]
    js.write_text('{"nope": 1}')
    with pytest.raises(InputError, match="unknown training setting"):
        resolve_config(tmp_path / "run", False, js, [], {})
    with pytest.raises(InputError, match="batch_size"):
        parse_set(["batch_size=many"])
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_set(["wat=1"])


def test_refuses_to_overwrite_or_resume_nothing(data_csv, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step=3.ckpt").write_bytes(b"")
    assert run(["train", "crystal", "--data", str(data_csv), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert run(["train", "crystal", "--data", str(data_csv), "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert run(["train", "crystal", "--out", str(tmp_path / "x"), "--max-steps", "2"]) == 2
    assert "no training data" in capsys.readouterr().err
    assert run(["train", "crystal", "--help"]) == 0


def test_data_cache_and_ema(data_csv, tmp_path, monkeypatch):
    from atomdiff.training import datamodules
    from atomdiff.training.lightning import EMA

    first = datamodules.load_structures([data_csv], tmp_path / "cache", limit=6)
    monkeypatch.setattr(datamodules, "read_structures", lambda *a, **k: pytest.fail("cache not used"))
    again = datamodules.load_structures([data_csv], tmp_path / "cache", limit=6)
    assert len(again) == 6
    for s, t in zip(first, again, strict=True):
        assert np.array_equal(s.numbers, t.numbers) and np.array_equal(s.frac, t.frac)
        assert np.array_equal(s.cell, t.cell)
    assert not list(data_csv.parent.glob("*.npz"))  # nothing written beside the data

    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.5)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)  # decay min(0.5, 2/11)
    d = 2 / 11
    assert torch.allclose(ema.shadow["weight"], d * start + (1 - d) * (start + 1))
    with ema.swapped_in(net):
        assert torch.equal(net.weight, ema.shadow["weight"])
    assert torch.equal(net.weight, start + 1)


def test_pattern_conditioned_training_resume_and_cfg_sampling(data_csv, tmp_path):
    from atomdiff.data.generate.patterns import simulate_training_patterns
    from atomdiff.diffusion.crystal import CrystalDiffusion

    out = tmp_path / "cond"
    args = ["train", "crystal", "--data", str(data_csv), "--out", str(out), *TINY, "--seed", "0"]
    assert run([*args, "--max-steps", "3", "--set", "patterns=2", "--set", "warmup_steps=1"]) == 0
    (cache,) = (out / "data_cache").glob("patterns_train_*.npz")
    with np.load(cache) as data:
        assert data["features"].shape[:2] == (16, 2) and data["radiation"].shape == (16, 2)
    model = CrystalDiffusion.load(out / "model")
    assert model.conditioned and model.net.config.cond_dim == model.net.pattern_encoder.config.cond_dim
    before = _ckpt(out / "checkpoints" / "last.ckpt")["global_step"]
    assert run(["train", "crystal", "--out", str(out), "--resume", "--max-steps", "5"]) == 0
    assert _ckpt(out / "checkpoints" / "last.ckpt")["global_step"] == 5 > before
    assert run(["train", "crystal", "--out", str(out), "--resume", "--set", "patterns=0"]) == 2  # refused

    structures = _structures(2)
    feats, rads = simulate_training_patterns(structures, 1, model.net.pattern_encoder.config, seed=0)
    with torch.no_grad():
        cond = model.encode_patterns(torch.as_tensor(feats[:, 0]), torch.as_tensor(rads[:, 0])).double()
    numbers = [s.numbers for s in structures]
    plain = model.sample(2, steps=3, seed=1, numbers=numbers, condition=cond, cfg_scale=0.0)
    guided = model.sample(2, steps=3, seed=1, numbers=numbers, condition=cond, cfg_scale=2.0)
    again = model.sample(2, steps=3, seed=1, numbers=numbers, condition=cond, cfg_scale=2.0)
    assert all(np.array_equal(a.frac, b.frac) for a, b in zip(guided, again, strict=True))
    assert not all(np.allclose(a.frac, b.frac) for a, b in zip(plain, guided, strict=True))


def test_fine_tuning_adds_a_pattern_encoder_that_starts_silent(data_csv, tmp_path):
    from atomdiff.diffusion.crystal import CrystalDiffusion
    from atomdiff.training.config import TrainConfig
    from atomdiff.training.run import _build_model

    base_dir = tmp_path / "base"
    args = ["train", "crystal", "--data", str(data_csv), "--out", str(base_dir), *TINY, "--max-steps", "2"]
    assert run(args) == 0
    base = CrystalDiffusion.load(base_dir / "model")
    config = TrainConfig(data=[str(data_csv)], init=str(base_dir / "model"), patterns=2)
    model = _build_model(config, _structures(), None).eval()
    # the same data: the same statistics (the volume per atom to rounding: the CSV stores fewer digits)
    assert model.conditioned and replace(model.stats, volume_per_atom=None) == replace(base.stats, volume_per_atom=None)
    assert model.stats.volume_per_atom == pytest.approx(base.stats.volume_per_atom, rel=1e-8)
    # other data: the base's lattice normalisation, the new data's counts and cells, the elements of both
    other = [Structure([30, 16], [[0, 0, 0], [0.25, 0.25, 0.25]], (np.ones((3, 3)) - np.eye(3)) * 2.7)]
    tuned = _build_model(config, other, None).stats
    assert (tuned.lattice_mean, tuned.lattice_std) == (base.stats.lattice_mean, base.stats.lattice_std)
    assert tuned.atom_counts == {2: 1} and tuned.cells == {"SZn": 1}
    assert tuned.elements == sorted(set(base.stats.elements) | {16, 30})
    batch_args = (torch.tensor([8, 22, 38]), torch.rand(3, 3, dtype=torch.float64), torch.zeros(1, 6).double())
    gram = model.lattice_noise.gram(batch_args[2], torch.tensor([3]))
    with torch.no_grad():
        want = base.net(*batch_args, gram, torch.zeros(3, dtype=torch.long), torch.tensor([0.5]).double())
        got = model.net(
            *batch_args, gram, torch.zeros(3, dtype=torch.long), torch.tensor([0.5]).double(), torch.randn(1, 128)
        )
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(w, g)


def test_a_resumed_schedule_follows_the_new_total_steps():
    from atomdiff.training.lightning import WarmupSchedule, lr_scheduler

    def scheduler(total: int):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return opt, lr_scheduler(opt, WarmupSchedule(0, total))

    opt, first = scheduler(10)
    for _ in range(10):
        opt.step()
        first.step()
    assert first.get_last_lr()[0] == pytest.approx(0.0)  # the end of a 10-step run
    _, resumed = scheduler(20)  # resumed with --max-steps 20
    resumed.load_state_dict(first.state_dict())
    assert resumed.last_epoch == 10
    assert resumed.lr_lambdas[0](resumed.last_epoch) == pytest.approx(0.5)  # half-way down the new cosine
