"""Download the public datasets that tests, training and benchmarks read, in the layout of the shared copy.

``download("perov_5", DIR)`` writes ``DIR/perov_5/{train,val,test}.csv``; point the tests at ``DIR`` with
``ATOMDIFF_SHARED_DATA=DIR``. Every file comes from a public GitHub repository (raw file URLs), is written
atomically (a failed or interrupted download leaves no partial file), is skipped when it is already there (so a
second run resumes), and is checked with atomdiff's own readers before it is moved into place. The dataset as a
whole is checked again at the end, and ``DIR/NAME/SOURCE.md`` records where it came from, when, and its licence.

``source`` replaces a dataset's base URL with a mirror laid out like the repository: an ``http(s)://`` or
``file://`` URL, or a plain local folder. That is how to work offline, and how the tests run.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from atomdiff.errors import InputError
from atomdiff.files import atomic_path

#: ``progress(dataset, files_done, files_total)``, called before the first file and after each one.
Progress = Callable[[str, int, int], None]

_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_USER_AGENT = "atomdiff-data-download (+https://github.com/)"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset.

    Attributes:
        remote: path below the dataset's base URL (the path inside the source repository).
        local: path below ``DIR/NAME``.
        kind: how the file is checked: ``"structures"`` (any format :func:`read_structures` reads) or ``"spectra"``.
        transform: turns the downloaded bytes into the bytes written (e.g. keep only a trajectory's final frame).
    """

    remote: str
    local: str
    kind: str = "structures"
    transform: Callable[[bytes], bytes] | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A downloadable dataset: where it lives, its files, and the terms it comes under."""

    name: str
    description: str
    repository: str
    base_url: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    validate: Callable[[Path, Sequence[RemoteFile]], None]
    note: str = ""


@dataclasses.dataclass
class DownloadResult:
    """What one :func:`download` call did."""

    name: str
    root: Path
    downloaded: list[Path]
    skipped: list[Path]


# --- per-file and per-dataset checks ---------------------------------------------------------------------------
def _check_structures(path: Path) -> None:
    """Parse the first structures of a file; for a CSV of CIFs also check that every row is complete."""
    from atomdiff.structure.io import read_structures

    if not read_structures(path, limit=3):
        raise InputError("no structures", path=str(path))
    if path.suffix.lower() == ".csv":
        csv.field_size_limit(sys.maxsize)
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            for row in reader:
                if row and len(row) != len(header):
                    raise InputError(
                        f"expected {len(header)} columns, got {len(row)} (truncated download?)",
                        path=str(path),
                        line=reader.line_num,
                    )


def _check_spectra(path: Path) -> None:
    from atomdiff.data.spectra import read_spectra_file

    read_spectra_file(path)


_CHECKS: dict[str, Callable[[Path], None]] = {"structures": _check_structures, "spectra": _check_spectra}


def _validate_structure_files(root: Path, files: Sequence[RemoteFile]) -> None:
    """Every structure file parses (the first rows of a CSV)."""
    from atomdiff.structure.io import read_structures

    for item in files:
        if not read_structures(root / item.local, limit=3):
            raise InputError("no structures", path=str(root / item.local))


def _validate_single_frames(root: Path, files: Sequence[RemoteFile]) -> None:
    """Every file holds exactly one structure (the final frame of its trajectory)."""
    from atomdiff.structure.io import read_structures

    for item in files:
        frames = read_structures(root / item.local, limit=2)
        if len(frames) != 1:
            raise InputError(f"expected one frame, found {len(frames)}", path=str(root / item.local))


def _validate_spectrum_dataset(root: Path, files: Sequence[RemoteFile]) -> None:
    """Each complete split reads as structures paired with per-atom spectra; other files parse on their own."""
    from atomdiff.data.spectra import read_spectrum_dataset

    splits: dict[str, list[RemoteFile]] = {}
    for item in files:
        splits.setdefault(Path(item.local).parts[1], []).append(item)
    for split, items in splits.items():
        expected = {Path(f.local).stem for f in _XANES_FILES if Path(f.local).parts[1] == split}
        present = {Path(f.local).stem for f in items if f.kind == "structures"}
        with_spectra = {Path(f.local).stem for f in items if f.kind == "spectra"}
        if present == with_spectra == expected:
            read_spectrum_dataset(root, split)
        else:
            for item in items:
                _CHECKS[item.kind](root / item.local)


# --- transforms -----------------------------------------------------------------------------------------------
def final_frame(data: bytes) -> bytes:
    """The last frame of an (ext)xyz trajectory, verbatim: its atom-count line, comment line and atom lines.

    The frames are split as text (count line, comment, that many atom lines), so the numbers are copied exactly
    as the source wrote them. Only a missing newline at the very end is added.
    """
    lines = data.splitlines(keepends=True)
    start, last = 0, None
    while start < len(lines):
        head = lines[start].strip()
        if not head:
            if any(line.strip() for line in lines[start:]):
                raise ValueError(f"blank line {start + 1} inside the trajectory")
            break
        try:
            count = int(head)
        except ValueError:
            raise ValueError(f"line {start + 1}: expected an atom count, got {head[:40]!r}") from None
        if count < 0:
            raise ValueError(f"line {start + 1}: negative atom count {count}")
        end = start + 2 + count
        if end > len(lines):
            raise ValueError(
                f"frame at line {start + 1} announces {count} atoms but the file ends after "
                f"{max(len(lines) - start - 2, 0)} (truncated download?)"
            )
        last = (start, end)
        start = end
    if last is None:
        raise ValueError("no frames")
    frame = b"".join(lines[last[0] : last[1]])
    return frame if frame.endswith(b"\n") else frame + b"\n"


# --- the registry ---------------------------------------------------------------------------------------------
def _raw(repository: str, ref: str) -> str:
    return f"https://raw.githubusercontent.com/{repository}/{ref}"


_CDVAE = "txie-93/cdvae"
_GRAPHITE = "LLNL/graphite"
_CARBON_DATA = "jla-gardner/carbon-data"
_SPLITS = ("train", "val", "test")

#: The a-C XANES files (those of the shared copy): poscar/<split>/<name>.vasp with xanes/<split>/<name>.txt|.csv.
XANES_MANIFEST: dict[str, tuple[str, ...]] = {
    "train": (
        "d0.0_11",
        "d0.0_13",
        "d0.0_14",
        "d0.0_15",
        "d0.0_16",
        "d0.0_17",
        "d0.0_18",
        "d0.0_19",
        "d0.0_20",
        "d1.5_1",
        "d1.5_10",
        "d1.5_2",
        "d1.5_3",
        "d1.5_4",
        "d1.5_5",
        "d1.5_6",
        "d1.5_7",
        "d1.5_8",
        "d1.5_9",
        "d2.0_1",
        "d2.5_1",
        "d2.5_2",
        "d2.5_3",
        "d2.5_4",
        "d3.5_2",
    ),
    "test": ("d1.5_11", "d1.5_12", "d1.5_13", "d2.0_2", "d2.5_5"),
    "misc": ("diamond", "graphite"),
}
_XANES_REMOTE = "notebooks/amorph-gen/data/a-C/dgp"


def _xanes_files() -> tuple[RemoteFile, ...]:
    out = []
    for split, names in XANES_MANIFEST.items():
        suffix = ".csv" if split == "misc" else ".txt"
        for name in names:
            for local, kind in (
                (f"poscar/{split}/{name}.vasp", "structures"),
                (f"xanes/{split}/{name}{suffix}", "spectra"),
            ):
                out.append(RemoteFile(f"{_XANES_REMOTE}/{local}", local, kind))
    return tuple(out)


_XANES_FILES = _xanes_files()

#: The selected C-GAP-17 trajectories, as (density in g/cm^3, anneal temperature in K): one per density at
#: 2000 K, plus four at higher anneal temperatures.
AMORPHOUS_SELECTION: tuple[tuple[str, int], ...] = tuple((f"{d / 10:.1f}", 2000) for d in range(10, 36)) + (
    ("1.5", 3000),
    ("2.5", 3000),
    ("2.0", 4000),
    ("3.0", 4000),
)


def _amorphous_files() -> tuple[RemoteFile, ...]:
    files = [
        RemoteFile(f"results/density-{d}-T-{t}.extxyz", f"gap17_density-{d}-T-{t}.extxyz", transform=final_frame)
        for d, t in AMORPHOUS_SELECTION
    ]
    return tuple(sorted(files, key=lambda f: f.local))


def _crystal_files(name: str) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(f"data/{name}/{split}.csv", f"{split}.csv") for split in _SPLITS)


_CDVAE_LICENCE = "MIT (the txie-93/cdvae repository)."

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="perov_5",
            description="Perov-5: ABX3 perovskites, 5 atoms per cell, DFT-relaxed; CSV of P1 CIFs "
            "(train 11,356, val 3,787, test 3,785 rows; about 18 MB).",
            repository=_CDVAE,
            base_url=_raw(_CDVAE, "main"),
            files=_crystal_files("perov_5"),
            licence=_CDVAE_LICENCE,
            citation="I. E. Castelli et al., Energy Environ. Sci. 5, 9034 (2012); "
            "T. Xie et al., Crystal Diffusion Variational Autoencoder, ICLR 2022 (CDVAE).",
            validate=_validate_structure_files,
        ),
        Dataset(
            name="carbon_24",
            description="Carbon-24: carbon crystals with 6-24 atoms per cell from AIRSS at 10 GPa, DFT-relaxed; CSV "
            "of P1 CIFs (train 6,091, val 2,032, test 2,030 rows; about 11 MB).",
            repository=_CDVAE,
            base_url=_raw(_CDVAE, "main"),
            files=_crystal_files("carbon_24"),
            licence=_CDVAE_LICENCE,
            citation="C. J. Pickard, AIRSS data for carbon at 10 GPa, Materials Cloud Archive 2020.0026 (2020); "
            "T. Xie et al., ICLR 2022 (CDVAE).",
            validate=_validate_structure_files,
        ),
        Dataset(
            name="a-C_xanes",
            description="Amorphous carbon: 30 cells of 216 C atoms (1.5-3.5 g/cm^3; 25 train, 5 test) with per-atom "
            "carbon K-edge XANES (100 bins), plus diamond and graphite references (about 6 MB).",
            repository=_GRAPHITE,
            base_url=_raw(_GRAPHITE, "HEAD"),
            files=_XANES_FILES,
            licence="MIT (the LLNL/graphite repository), Copyright (c) 2022 Tim Hsu.",
            citation="H. Kwon, T. Hsu et al., Spectroscopy-guided discovery of three-dimensional structures of "
            "disordered materials with diffusion models, Mach. Learn.: Sci. Technol. 5, 045037 (2024).",
            validate=_validate_spectrum_dataset,
        ),
        Dataset(
            name="amorphous_carbon",
            description="Amorphous carbon from C-GAP-17 melt-quench-anneal MD: the final frame (time=210 ps) of 30 "
            "selected trajectories of 200 C atoms (1.0-3.5 g/cm^3; anneal 2000 K, and 3000/4000 K for four). "
            "Each trajectory is about 3 MB to download; about 16 kB is kept.",
            repository=_CARBON_DATA,
            base_url=_raw(_CARBON_DATA, "HEAD"),
            files=_amorphous_files(),
            licence="None stated: the repository has no LICENSE file and its README states no licence (it asks "
            "users to cite the paper). Reuse terms are unspecified, i.e. all rights reserved by default: use "
            "these files as reference and evaluation data only, never to train weights that are shipped.",
            citation="J. L. A. Gardner, Z. Faure Beaulieu, V. L. Deringer, Synthetic Data Enable Experiments in "
            "Atomistic Machine Learning, arXiv:2211.16443 (2022), doi:10.48550/arXiv.2211.16443.",
            validate=_validate_single_frames,
            note="Each file is the final frame of `results/density-{D}-T-{T}.extxyz`, copied verbatim as text "
            "(atom-count line, comment line, atom lines) and renamed `gap17_density-{D}-T-{T}.extxyz`.",
        ),
    )
}


# --- fetching -------------------------------------------------------------------------------------------------
def _base_url(source: str | os.PathLike | None, dataset: Dataset) -> str:
    """The base URL to fetch from: the dataset's own, or ``source`` (a URL or a local folder)."""
    if source is None:
        return dataset.base_url
    text = str(source)
    scheme = urllib.parse.urlsplit(text).scheme.lower()
    if scheme in ("http", "https", "file"):
        return text.rstrip("/")
    folder = Path(text).expanduser()
    if not folder.is_dir():
        raise InputError("--source: not a folder, nor an http(s):// or file:// URL", path=text)
    return folder.resolve().as_uri().rstrip("/")


def file_url(base_url: str, remote: str) -> str:
    """``base_url/remote`` with the path quoted for a URL."""
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(remote)}"


def _fetch(url: str) -> bytes:
    """The bytes at ``url``; every failure is an :class:`InputError` that names the URL and says what to do."""
    hint = (
        "check the network (offline? behind a proxy?), or fetch the files elsewhere and pass --source DIR "
        "(a folder laid out like the source repository) or --source URL (a mirror)"
    )
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            expected = response.headers.get("Content-Length")
            chunks = []
            while chunk := response.read(_CHUNK):
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise InputError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; {hint}") from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot download {url}: {exc.reason}; {hint}") from None
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot download {url}: {exc}; {hint}") from None
    data = b"".join(chunks)
    if expected is not None and expected.isdigit() and int(expected) != len(data):
        raise InputError(f"cannot download {url}: got {len(data)} of {expected} bytes (connection cut?); run again")
    return data


def _write_source_note(root: Path, dataset: Dataset, base_url: str, files: Sequence[RemoteFile]) -> None:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# {dataset.name}",
        "",
        dataset.description,
        "",
        f"- Source: https://github.com/{dataset.repository}",
        f"- Downloaded from: {base_url}",
        f"- Date: {when} (by `atomdiff data download`)",
        f"- Files: {len(files)} of {len(dataset.files)}",
        f"- Licence: {dataset.licence}",
        f"- Cite: {dataset.citation}",
    ]
    if dataset.note:
        lines += ["", dataset.note]
    lines += ["", "| local file | source path |", "| --- | --- |"]
    lines += [f"| `{f.local}` | `{f.remote}` |" for f in files]
    with atomic_path(root / "SOURCE.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _select(dataset: Dataset, only: Iterable[str] | None) -> list[RemoteFile]:
    if only is None:
        return list(dataset.files)
    wanted = set(only)
    files = [f for f in dataset.files if f.local in wanted or Path(f.local).name in wanted]
    missing = wanted - {f.local for f in files} - {Path(f.local).name for f in files}
    if missing:
        raise InputError(f"{dataset.name} has no file {', '.join(sorted(missing))}")
    return files


def download(
    name: str,
    out_dir: str | os.PathLike,
    source: str | os.PathLike | None = None,
    progress: Progress | None = None,
    *,
    only: Iterable[str] | None = None,
) -> DownloadResult:
    """Download dataset ``name`` into ``out_dir/name``, check it, and record its source in ``SOURCE.md``.

    Args:
        name: one of :data:`DATASETS`.
        out_dir: the folder that holds the dataset folders (what ``ATOMDIFF_SHARED_DATA`` points at).
        source: a mirror to fetch from instead of the public repository: ``http(s)://`` or ``file://`` URL, or a
            local folder, laid out like the repository.
        progress: called as ``progress(name, files_done, files_total)``.
        only: download only these files (local paths or file names).

    Files already present are kept (resume). A file that fails to download or to parse stops the run with an
    :class:`InputError` naming it, and nothing of it is written.
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    files = _select(dataset, only)
    base_url = _base_url(source, dataset)
    root = Path(out_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    downloaded: list[Path] = []
    skipped: list[Path] = []
    if progress is not None:
        progress(name, 0, len(files))
    for done, item in enumerate(files, start=1):
        target = root / item.local
        if target.is_file():
            skipped.append(target)
        else:
            _download_file(file_url(base_url, item.remote), target, item)
            downloaded.append(target)
        if progress is not None:
            progress(name, done, len(files))
    try:
        dataset.validate(root, files)
    except InputError as exc:
        raise InputError(f"{name} does not check out: {exc}; delete the file named and run again") from None
    _write_source_note(root, dataset, base_url, [f for f in dataset.files if (root / f.local).is_file()])
    return DownloadResult(name, root, downloaded, skipped)


def _download_file(url: str, target: Path, item: RemoteFile) -> None:
    """Fetch, transform and check one file; it appears at ``target`` only if all of that succeeds."""
    data = _fetch(url)
    if item.transform is not None:
        try:
            data = item.transform(data)
        except ValueError as exc:
            raise InputError(f"downloaded from {url} but cannot be read: {exc}", path=str(target)) from None
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
        try:
            _CHECKS[item.kind](tmp)
        except InputError as exc:
            message = str(exc)
            if message.startswith(str(tmp)):  # the error names the temporary file: say where instead
                message = message[len(str(tmp)) :].lstrip(":, ")
            raise InputError(f"downloaded from {url} but does not parse: {message}", path=str(target)) from None
