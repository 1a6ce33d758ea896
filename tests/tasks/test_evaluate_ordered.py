"""The ordered-phase experiment (``atomdiff evaluate ordered``) on tiny untrained models."""

from __future__ import annotations

import json

import pytest
import torch
from ase.io import write

from atomdiff.cli.main import run
from atomdiff.data.generate.ordered import BOX, ordered_structures
from atomdiff.diffusion.amorphous import AmorphousDiffusion
from atomdiff.diffusion.voxel import VoxelDiffusion
from atomdiff.models.local import LocalNetConfig
from atomdiff.models.voxel_unet import VoxelUNetConfig
from atomdiff.representations.voxel import VoxelGrid
from atomdiff.structure.structure import Structure
from atomdiff.tasks.evaluate_ordered import reference_ceiling, sample_record, summarise


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ordered")
    data = folder / "ordered.extxyz"
    write(data, ordered_structures(1, seed=0, phases=("fcc", "CsCl"), sigmas=(0.02,)), format="extxyz")
    torch.manual_seed(0)
    voxel = VoxelDiffusion(
        VoxelGrid(("Cu", "Zn"), (8, 8, 8), sigma=0.8),
        VoxelUNetConfig(channels=2, base=4, mults=(1, 2), time_dim=8, groups=2),
        torch.eye(3).numpy() * BOX,
    )
    voxel.save(folder / "voxel")
    VoxelDiffusion(
        VoxelGrid(("Cu", "Zn"), (8, 8, 8), sigma=0.8),
        VoxelUNetConfig(channels=2, base=4, mults=(1, 2), time_dim=8, groups=2, classes=("CsCl", "fcc")),
        torch.eye(3).numpy() * BOX,
    ).save(folder / "voxel_phase")
    AmorphousDiffusion(LocalNetConfig(hidden=8, layers=1, cutoff=3.0), elements=[29, 30]).save(folder / "point")
    return folder, data


def test_the_training_boxes_are_their_own_ceiling(setup):
    _, data = setup
    from atomdiff.structure.io import read_structures

    ceiling = reference_ceiling(read_structures(data))
    assert ceiling["perfect_fraction"] == 1.0
    assert set(ceiling["per_phase"]) == {"fcc", "CsCl"}


def test_a_sample_of_the_wrong_phase_is_not_counted_perfect():
    fcc = ordered_structures(1, phases=("fcc",), sigmas=(0.0,))[0]
    record = sample_record(Structure.from_ase(fcc), intended="bcc")
    assert record["phase"] == "fcc" and not record["perfect"] and record["perfect_any_phase"]
    summary = summarise([record, {**record, "perfect": True, "intended": "fcc"}], "intended")
    assert summary["per_phase"]["bcc"]["perfect"] == 0 and summary["per_phase"]["fcc"]["perfect"] == 1
    assert summary["perfect_fraction"] == 0.5
    assert summary["perfect_any_phase"] == 2 and summary["confusion"] == {"fcc": {"fcc": 1}, "bcc": {"fcc": 1}}


def test_evaluate_ordered_writes_result_and_samples(setup, tmp_path):
    folder, data = setup
    out = tmp_path / "result.json"
    args = ["evaluate", "ordered", "--data", str(data), "--voxel-model", str(folder / "voxel")]
    args += ["--point-model", str(folder / "point"), "-n", "2", "--steps", "2", "--seed", "1", "-o", str(out)]
    assert run(args) == 0
    result = json.loads(out.read_text())
    assert result["reference"]["perfect_fraction"] == 1.0
    for key in ("voxel", "point_cloud"):
        assert result[key]["samples"] == 2 and len(result[key]["samples_detail"]) == 2
        assert (tmp_path / f"result_{key}.extxyz").is_file()
    assert all(r["intended"] in ("fcc", "CsCl") for r in result["point_cloud"]["samples_detail"])


def test_unlabelled_data_is_refused(setup, tmp_path):
    folder, _ = setup
    plain = tmp_path / "plain.extxyz"
    atoms = ordered_structures(1, phases=("fcc",))[0]
    atoms.info.clear()
    write(plain, atoms, format="extxyz")
    args = ["evaluate", "ordered", "--data", str(plain), "--voxel-model", str(folder / "voxel"), "-o"]
    assert run([*args, str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_a_phase_conditioned_voxel_model_is_asked_for_each_phase_in_turn(setup, tmp_path):
    folder, data = setup
    out = tmp_path / "result.json"
    args = ["evaluate", "ordered", "--data", str(data), "--voxel-model", str(folder / "voxel_phase")]
    guided = ["--guidance", "1.5", "--guidance-interval", "0.2,0.9"]
    assert run([*args, "-n", "4", "--steps", "2", *guided, "-o", str(out)]) == 0
    voxel = json.loads(out.read_text())["voxel"]
    assert voxel["conditioned_on_phase"] and voxel["guidance"] == 1.5
    assert voxel["guidance_interval"] == [0.2, 0.9]
    assert [r["intended"] for r in voxel["samples_detail"]] == ["fcc", "CsCl", "fcc", "CsCl"]  # PHASES order
    assert set(voxel["per_phase"]) == {"fcc", "CsCl"}


def test_intended_phases_and_templates_cycle_through_the_data_phases(setup):
    from atomdiff.structure.io import read_structures
    from atomdiff.tasks.evaluate_ordered import intended_phases, point_cloud_templates

    data = read_structures(setup[1])
    phases = intended_phases(data, 5)
    assert phases == ["fcc", "CsCl", "fcc", "CsCl", "fcc"]
    assert [t.info["phase"] for t in point_cloud_templates(data, phases, seed=0)] == phases


def test_a_crystal_model_baseline_keeps_each_templates_species_and_box(setup, tmp_path):
    import numpy as np

    from atomdiff.diffusion.crystal import CrystalDiffusion, DataStatistics
    from atomdiff.models.crystal import CrystalNetConfig
    from atomdiff.structure.io import read_structures

    folder, data = setup
    structures = read_structures(data)
    torch.manual_seed(0)
    CrystalDiffusion(CrystalNetConfig(hidden=16, layers=1), DataStatistics.from_structures(structures)).save(
        folder / "crystal"
    )
    out = tmp_path / "result.json"
    args = ["evaluate", "ordered", "--data", str(data), "--skip-voxel", "--point-model", str(folder / "crystal")]
    args += ["-n", "3", "--steps", "2", "--seed", "4"]
    assert run([*args, "-o", str(out)]) == 0
    records = json.loads(out.read_text())["point_cloud"]["samples_detail"]
    assert [r["intended"] for r in records] == ["fcc", "CsCl", "fcc"]
    samples = read_structures(tmp_path / "result_point_cloud.extxyz")
    by_phase = {s.info["phase"]: s for s in structures}
    for sample, record in zip(samples, records, strict=True):
        template = by_phase[record["intended"]]
        assert sorted(sample.numbers) == sorted(template.numbers)
        np.testing.assert_allclose(sample.cell, template.cell, atol=1e-8)
        assert not np.allclose(sample.frac, template.frac)  # positions are generated, not copied
    again = tmp_path / "again.json"
    assert run([*args, "-o", str(again)]) == 0
    first, second = samples, read_structures(tmp_path / "again_point_cloud.extxyz")
    assert all(np.allclose(a.frac, b.frac) for a, b in zip(first, second, strict=True))


def test_a_model_of_another_kind_is_refused_as_point_cloud_baseline(setup, tmp_path):
    folder, data = setup
    args = ["evaluate", "ordered", "--data", str(data), "--skip-voxel", "--point-model", str(folder / "voxel")]
    assert run([*args, "-o", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()
