"""``atomdiff data download``: the registry matches the shared copy, and downloads from a local mirror (laid out
like the source repositories) give the same layout, check out, resume, and fail clearly on a corrupt file."""

from __future__ import annotations

import csv
import filecmp
import shutil
import sys
from pathlib import Path

import pytest

from atomdiff.cli.main import run
from atomdiff.data.download import (
    AMORPHOUS_SELECTION,
    DATASETS,
    XANES_MANIFEST,
    download,
    file_url,
    final_frame,
)
from atomdiff.errors import InputError

ROWS = 20


def _files(root: Path) -> set[str]:
    """Data files below ``root``, relative, without the READMEs and the source note."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name not in ("README.md", "SOURCE.md")
    }


def _head_csv(src: Path, dst: Path, rows: int) -> None:
    csv.field_size_limit(sys.maxsize)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, newline="") as fin, open(dst, "w", newline="") as fout:
        reader, writer = csv.reader(fin), csv.writer(fout)
        for k, row in enumerate(reader):
            if k > rows:
                break
            writer.writerow(row)


def _crystal_mirror(shared: Path, mirror: Path, name: str) -> None:
    folder = mirror / "data" / name
    _head_csv(shared / name / "val.csv", folder / "train.csv", 5)
    for split in ("val", "test"):
        _head_csv(shared / name / f"{split}.csv", folder / f"{split}.csv", ROWS)


def _xanes_mirror(shared: Path, mirror: Path) -> Path:
    remote = mirror / "notebooks/amorph-gen/data/a-C/dgp"
    for sub in ("poscar", "xanes"):
        shutil.copytree(shared / "a-C_xanes" / sub, remote / sub)
    return remote


def _amorphous_mirror(shared: Path, mirror: Path) -> None:
    """Two-frame trajectories whose last frame is the shared file; the first frame differs."""
    results = mirror / "results"
    results.mkdir(parents=True)
    for path in sorted((shared / "amorphous_carbon").glob("gap17_*.extxyz")):
        last = path.read_bytes()
        first = last.replace(b"time=210", b"time=0").replace(b"C ", b"C  ", 3)
        (results / path.name.removeprefix("gap17_")).write_bytes(first + last)


def test_registry_matches_the_shared_copy(shared_data):
    for name in ("perov_5", "carbon_24"):
        local = {f.local for f in DATASETS[name].files}
        assert local == {"train.csv", "val.csv", "test.csv"}
        assert _files(shared_data / name) == local - {"train.csv"}
    assert {f.local for f in DATASETS["a-C_xanes"].files} == _files(shared_data / "a-C_xanes")
    assert [len(XANES_MANIFEST[s]) for s in ("train", "test", "misc")] == [25, 5, 2]
    assert {f.local for f in DATASETS["amorphous_carbon"].files} == _files(shared_data / "amorphous_carbon")
    assert len(AMORPHOUS_SELECTION) == 30


def test_urls_point_at_the_public_repositories():
    def url(name: str, local: str) -> str:
        dataset = DATASETS[name]
        remote = next(f.remote for f in dataset.files if f.local == local)
        return file_url(dataset.base_url, remote)

    assert url("perov_5", "train.csv") == "https://raw.githubusercontent.com/txie-93/cdvae/main/data/perov_5/train.csv"
    assert (
        url("carbon_24", "test.csv") == "https://raw.githubusercontent.com/txie-93/cdvae/main/data/carbon_24/test.csv"
    )
    assert url("a-C_xanes", "xanes/misc/graphite.csv") == (
        "https://raw.githubusercontent.com/LLNL/graphite/HEAD/notebooks/amorph-gen/data/a-C/dgp/xanes/misc/graphite.csv"
    )
    assert url("amorphous_carbon", "gap17_density-2.5-T-3000.extxyz") == (
        "https://raw.githubusercontent.com/jla-gardner/carbon-data/HEAD/results/density-2.5-T-3000.extxyz"
    )


def test_crystals_from_a_mirror_resume(shared_data, tmp_path):
    mirror, out = tmp_path / "mirror", tmp_path / "out"
    for name in ("perov_5", "carbon_24"):
        _crystal_mirror(shared_data, mirror, name)
    calls = []
    for name in ("perov_5", "carbon_24"):
        result = download(name, out, source=mirror, progress=lambda *a: calls.append(a))
        assert len(result.downloaded) == 3 and not result.skipped
        assert _files(out / name) == {"train.csv", "val.csv", "test.csv"} == _files(shared_data / name) | {"train.csv"}
        for split in ("train", "val", "test"):
            assert filecmp.cmp(out / name / f"{split}.csv", mirror / "data" / name / f"{split}.csv", shallow=False)
        note = (out / name / "SOURCE.md").read_text()
        assert "MIT" in note and "txie-93/cdvae" in note and mirror.resolve().as_uri() in note
    assert calls[0] == ("perov_5", 0, 3) and calls[-1] == ("carbon_24", 3, 3)
    again = download("perov_5", out, source=mirror.resolve().as_uri())  # file:// URL; nothing left to fetch
    assert not again.downloaded and len(again.skipped) == 3


def test_xanes_from_a_mirror_equals_the_shared_copy(shared_data, tmp_path):
    mirror, out = tmp_path / "mirror", tmp_path / "out"
    _xanes_mirror(shared_data, mirror)
    result = download("a-C_xanes", out, source=mirror)
    assert len(result.downloaded) == 64
    assert _files(out / "a-C_xanes") == _files(shared_data / "a-C_xanes")
    for rel in _files(shared_data / "a-C_xanes"):
        assert filecmp.cmp(out / "a-C_xanes" / rel, shared_data / "a-C_xanes" / rel, shallow=False), rel
    assert "MIT" in (out / "a-C_xanes" / "SOURCE.md").read_text()
    (out / "a-C_xanes" / "xanes/test/d2.0_2.txt").unlink()  # an interrupted run: one file missing
    again = download("a-C_xanes", out, source=mirror)
    assert [p.name for p in again.downloaded] == ["d2.0_2.txt"] and len(again.skipped) == 63


def test_amorphous_final_frames_equal_the_shared_copy(shared_data, tmp_path):
    mirror, out = tmp_path / "mirror", tmp_path / "out"
    _amorphous_mirror(shared_data, mirror)
    download("amorphous_carbon", out, source=mirror)
    shared = shared_data / "amorphous_carbon"
    assert _files(out / "amorphous_carbon") == _files(shared)
    for rel in _files(shared):
        assert (out / "amorphous_carbon" / rel).read_bytes() == (shared / rel).read_bytes(), rel
    note = (out / "amorphous_carbon" / "SOURCE.md").read_text()
    assert "None stated" in note and "arXiv:2211.16443" in note


def test_final_frame_is_the_last_frame_verbatim():
    frame = b'2\nLattice="1 0 0 0 1 0 0 0 1" time=%d\nC 0.10 0.2 0.3\nC   0.5  0.50000 0.5\n'
    text = frame % 0 + frame % 1 + frame % 2 + b"\n\n"
    assert final_frame(text) == frame % 2
    assert final_frame((frame % 0 + frame % 7).rstrip(b"\n")) == frame % 7  # a missing final newline is added
    assert final_frame(b"1\r\ncomment\r\nC 0 0 0\r\n") == b"1\r\ncomment\r\nC 0 0 0\r\n"
    with pytest.raises(ValueError, match="truncated"):
        final_frame(frame % 0 + b"2\ncomment\nC 0 0 0\n")
    with pytest.raises(ValueError, match="atom count"):
        final_frame(b"two\ncomment\n")
    with pytest.raises(ValueError, match="no frames"):
        final_frame(b"")


def test_corrupt_or_truncated_files_are_named_and_not_written(shared_data, tmp_path):
    mirror, out = tmp_path / "mirror", tmp_path / "out"
    _crystal_mirror(shared_data, mirror, "perov_5")
    bad = mirror / "data/perov_5/test.csv"
    bad.write_text(bad.read_text().replace("_cell_length_a", "_cell_length_a oops", 1).replace("loop_", "lop_", 2))
    with pytest.raises(InputError, match=r"perov_5/test\.csv.*does not parse"):
        download("perov_5", out, source=mirror)
    assert not (out / "perov_5/test.csv").exists() and (out / "perov_5/train.csv").is_file()
    assert not list((out / "perov_5").glob(".*"))  # no temporary file left behind

    results = mirror / "results"
    results.mkdir()
    traj = shared_data / "amorphous_carbon/gap17_density-1.0-T-2000.extxyz"
    (results / "density-1.0-T-2000.extxyz").write_bytes(traj.read_bytes()[:-500])
    with pytest.raises(InputError, match=r"gap17_density-1\.0-T-2000\.extxyz.*truncated"):
        download("amorphous_carbon", out, source=mirror, only=["gap17_density-1.0-T-2000.extxyz"])
    assert not (out / "amorphous_carbon/gap17_density-1.0-T-2000.extxyz").exists()


def test_unknown_names_and_missing_files_are_clear(tmp_path):
    with pytest.raises(InputError, match="known: perov_5, carbon_24, a-C_xanes, amorphous_carbon"):
        download("perov5", tmp_path)
    with pytest.raises(InputError, match=r"cannot download file://.*/data/perov_5/train\.csv.*--source"):
        download("perov_5", tmp_path / "out", source=tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        download("perov_5", tmp_path / "out", source=tmp_path / "nowhere")


def test_cli_download_and_list(shared_data, tmp_path, capsys):
    assert run(["data", "download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in DATASETS)
    mirror, out = tmp_path / "mirror", tmp_path / "out"
    _crystal_mirror(shared_data, mirror, "carbon_24")
    assert run(["data", "download", "carbon_24", "-o", str(out), "--source", str(mirror)]) == 0
    assert "3 downloaded" in capsys.readouterr().out
    assert run(["data", "download", "carbon_24", "-o", str(out), "--source", str(mirror)]) == 0
    assert "0 downloaded, 3 already there" in capsys.readouterr().out
    assert run(["data", "download", "nope", "-o", str(out)]) == 2
