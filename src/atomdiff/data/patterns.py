"""Reading and writing measured 1D patterns (powder diffraction, total scattering, spectra).

Text formats (``.xy``, ``.xye``, ``.dat``, ``.txt``, ``.csv``) hold 2 or 3 columns: x, y and an optional
standard uncertainty σ of y. PANalytical ``.xrdml`` files are read too. Every problem in a file raises
:class:`~atomdiff.errors.InputError` naming the file and, where it applies, the 1-based line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomdiff.errors import InputError
from atomdiff.files import atomic_path
from atomdiff.physics.base import AXES, Pattern

TEXT_SUFFIXES = (".xy", ".xye", ".dat", ".txt")
#: total-scattering files of PDFgetX3 / PDFgui (a header, then ``#### start data`` and columns)
PDF_SUFFIXES = (".gr", ".sq", ".fq", ".iq")
_PDF_AXES = {".gr": "r", ".sq": "q", ".fq": "q", ".iq": "q"}
_START_DATA = "#### start data"
SUFFIXES = (*TEXT_SUFFIXES, *PDF_SUFFIXES, ".csv", ".xrdml")
COMMENT_PREFIXES = ("#", "!", "%", ";", "//")

#: column names (lower case, without spaces, "_", "-" or units) → axis
_AXIS_NAMES = {
    "twotheta": "two_theta",
    "2theta": "two_theta",
    "tth": "two_theta",
    "2th": "two_theta",
    "q": "q",
    "r": "r",
    "energy": "energy",
}
_Y_NAMES = {"intensity", "intensities", "counts", "count", "y", "i", "int", "yobs", "iobs"}
_SIGMA_NAMES = {"sigma", "esd", "err", "error", "errors", "yerr", "dy", "sig", "e", "uncertainty", "std"}


@dataclasses.dataclass
class MeasuredPattern:
    """One measured pattern.

    Attributes:
        x: ``(n,)`` strictly increasing grid: 2θ in degrees, Q in Å⁻¹, r in Å or energy in eV (see ``axis``).
        y: ``(n,)`` measured values (counts or arbitrary units, as in the file).
        sigma: ``(n,)`` standard uncertainties of ``y`` (same unit), or ``None`` when the file has none.
        axis: one of ``"two_theta"``, ``"q"``, ``"r"``, ``"energy"``.
        source: the file it was read from, if any.
        wavelength: radiation wavelength in Å when the file states it (e.g. ``.xrdml``), else ``None``.
        meta: anything else the file said (comments, column names, counting time in s, ...).
    """

    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray | None = None
    axis: str = "two_theta"
    source: str | None = None
    wavelength: float | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_pattern(self, dtype: torch.dtype = torch.float64, quantity: str = "intensity") -> Pattern:
        """Return a :class:`Pattern` with ``x`` of shape ``(n,)`` and ``y`` of shape ``(1, n)``."""
        x = torch.as_tensor(np.asarray(self.x), dtype=dtype)
        y = torch.as_tensor(np.asarray(self.y), dtype=dtype).reshape(1, -1)
        return Pattern(x, y, self.axis, quantity)


def _norm(name: str) -> str:
    name = name.strip().strip("\"'").lower().replace("θ", "theta")
    name = re.sub(r"[\(\[\{/].*$", "", name)  # drop units: "2theta (deg)", "q[1/A]"
    return re.sub(r"[\s_\-]", "", name)


def _role(name: str) -> str | None:
    n = _norm(name)
    if n in _AXIS_NAMES or n == "x":
        return "x"
    if n in _Y_NAMES:
        return "y"
    return "sigma" if n in _SIGMA_NAMES else None


def _check_axis(axis: str | None, where: str | None) -> None:
    if axis is not None and axis not in AXES:
        raise InputError(f"unknown axis {axis!r}; expected one of {', '.join(AXES)}", path=where)


def read_pattern(path: str | os.PathLike, axis: str | None = None) -> MeasuredPattern:
    """Read a measured pattern from ``.xy``, ``.xye``, ``.dat``, ``.txt``, ``.csv``, ``.xrdml``, or the
    total-scattering files ``.gr`` (r axis), ``.sq``, ``.fq``, ``.iq`` (Q axis) of PDFgetX3/PDFgui.

    ``axis`` overrides what the file says; otherwise it comes from the column names (or the total-scattering
    suffix) and defaults to ``"two_theta"`` (degrees). Raises :class:`InputError` for a missing, empty or
    malformed file.
    """
    path = Path(path)
    where = str(path)
    _check_axis(axis, where)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unknown pattern format {path.suffix!r}; expected one of {', '.join(SUFFIXES)}", path=where)
    if not path.exists():
        raise InputError("file not found", path=where)
    if not path.is_file():
        raise InputError("not a regular file", path=where)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=where) from exc
    if not text.strip():
        raise InputError("file is empty", path=where)
    if suffix == ".xrdml":
        return _parse_xrdml(text, where, axis)
    if suffix in PDF_SUFFIXES:
        lines = text.splitlines()
        start = next((k for k, line in enumerate(lines) if line.strip().lower().startswith(_START_DATA)), None)
        if start is not None:  # blank out the header, keeping line numbers for messages
            text = "\n" * (start + 1) + "\n".join(lines[start + 1 :])
        return _parse_text(text, where, axis or _PDF_AXES[suffix], csv=False)
    return _parse_text(text, where, axis, csv=suffix == ".csv")


def _split(line: str, csv: bool) -> list[str]:
    if csv:
        return [t.strip() for t in line.split(",")]
    return [t for t in re.split(r"[\s,]+", line.strip()) if t]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_text(text: str, where: str, axis: str | None, csv: bool) -> MeasuredPattern:
    comments: list[str] = []
    last_comment: str | None = None
    names: list[str] | None = None
    rows: list[list[float]] = []
    lines: list[int] = []
    ncols = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s:
            continue
        prefix = next((p for p in COMMENT_PREFIXES if s.startswith(p)), None)
        if prefix is not None:
            last_comment = s[len(prefix) :].strip()
            comments.append(last_comment)
            continue
        tokens = _split(s, csv)
        if not rows and names is None and not _is_number(tokens[0]):
            names = tokens  # the first non-comment line may name the columns
            ncols = len(names)
            continue
        if not rows and names is None and last_comment:
            guess = _split(last_comment, csv)  # "# two_theta intensity" as written by write_pattern
            if len(guess) == len(tokens) and any(_role(g) for g in guess):
                names = guess
        if not ncols:
            ncols = len(tokens)
            if names is None and ncols not in (2, 3):
                raise InputError(
                    f"expected 2 or 3 columns (x, y[, sigma]), found {ncols}: {s!r}", path=where, line=lineno
                )
        if len(tokens) != ncols:
            raise InputError(f"expected {ncols} columns, found {len(tokens)}: {s!r}", path=where, line=lineno)
        row = []
        for token in tokens:
            try:
                row.append(float(token))
            except ValueError:
                what = f"{token!r}" if token else "an empty field"
                msg = f"expected a number, found {what} in {s!r}"
                raise InputError(msg, path=where, line=lineno) from None
        rows.append(row)
        lines.append(lineno)

    if not rows:
        raise InputError("file is empty: no data points", path=where)
    xi, yi, si, file_axis = _columns(names, ncols, where)
    data = np.asarray(rows, dtype=np.float64)
    sigma = data[:, si] if si is not None else None
    x, y = data[:, xi], data[:, yi]
    _validate(x, y, sigma, where, lines)
    meta: dict[str, Any] = {"format": "csv" if csv else "text", "comments": comments}
    if names is not None:
        meta["columns"] = [n.strip().strip("\"'") for n in names]
    return MeasuredPattern(x, y, sigma, axis or file_axis or "two_theta", where, None, meta)


def _columns(names: Sequence[str] | None, ncols: int, where: str) -> tuple[int, int, int | None, str | None]:
    """Return the indices of x, y and sigma (or ``None``) and the axis the column names imply."""
    if names is None:
        return 0, 1, (2 if ncols == 3 else None), None
    roles = [_role(n) for n in names]
    if not any(roles):
        if ncols not in (2, 3):
            raise InputError(f"cannot tell x and y apart among columns {list(names)}", path=where)
        return 0, 1, (2 if ncols == 3 else None), None
    free = [i for i, r in enumerate(roles) if r is None]
    xi = roles.index("x") if "x" in roles else (free.pop(0) if free else None)
    yi = roles.index("y") if "y" in roles else (free.pop(0) if free else None)
    if xi is None or yi is None or xi == yi:
        raise InputError(f"cannot tell x and y apart among columns {list(names)}", path=where)
    si = roles.index("sigma") if "sigma" in roles else None
    return xi, yi, si, _AXIS_NAMES.get(_norm(names[xi]))


def _validate(
    x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, where: str, lines: Sequence[int] | None = None
) -> None:
    """Check finiteness, length ≥ 2, strictly increasing ``x`` and non-negative ``sigma``."""

    def line(i: int) -> int | None:
        return None if lines is None else lines[i]

    def at(i: int) -> str:
        return f"point {i + 1}" if lines is None else f"line {lines[i]}"

    for name, values in (("x", x), ("y", y), ("sigma", sigma)):
        if values is None:
            continue
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            msg = f"{name} is {float(values[i])} (not a finite number) at {at(i)}"
            raise InputError(msg, path=where, line=line(i))
    if x.size < 2:
        raise InputError(f"too few data points ({x.size}); need at least 2", path=where)
    step = np.diff(x)
    bad = np.flatnonzero(step <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        hint = " (x decreases; reverse the data, atomdiff does not reorder it)" if np.all(step < 0) else ""
        msg = f"x must be strictly increasing, but {float(x[i])!r} at {at(i)} follows {float(x[i - 1])!r}"
        raise InputError(f"{msg} at {at(i - 1)}{hint}", path=where, line=line(i))
    if sigma is not None:
        bad = np.flatnonzero(sigma < 0)
        if bad.size:
            i = int(bad[0])
            raise InputError(f"sigma is negative ({float(sigma[i])!r}) at {at(i)}", path=where, line=line(i))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(node: ET.Element, name: str) -> ET.Element | None:
    return next((e for e in node.iter() if _local(e.tag) == name), None)


def _floats(node: ET.Element, what: str, where: str) -> np.ndarray:
    try:
        return np.asarray([float(t) for t in (node.text or "").split()], dtype=np.float64)
    except ValueError:
        msg = f"<{_local(node.tag)}> of {what} holds text that is not a number"
        raise InputError(msg, path=where) from None


def _parse_xrdml(text: str, where: str, axis: str | None) -> MeasuredPattern:
    """Read the first scan of a PANalytical XRDML file (counts as stored, 2θ in degrees)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(f"malformed XRDML (invalid XML): {exc}", path=where, line=exc.position[0]) from None
    if axis not in (None, "two_theta"):
        raise InputError(f"XRDML scans are in 2θ, cannot read them as axis {axis!r}", path=where)
    scans = [e for e in root.iter() if _local(e.tag) == "dataPoints"]
    if not scans:
        raise InputError("malformed XRDML: no <dataPoints> element", path=where)
    points = scans[0]
    node = next((e for e in points.iter() if _local(e.tag) in ("intensities", "counts")), None)
    if node is None:
        raise InputError("malformed XRDML: <dataPoints> has no <intensities> or <counts>", path=where)
    y = _floats(node, "the intensities", where)
    positions = next((e for e in points if _local(e.tag) == "positions" and e.get("axis") == "2Theta"), None)
    if positions is None:
        raise InputError('malformed XRDML: no <positions axis="2Theta"> in <dataPoints>', path=where)
    listed = _find(positions, "listPositions")
    if listed is not None:
        x = _floats(listed, "the 2Theta positions", where)
        if x.size != y.size:
            msg = f"malformed XRDML: {x.size} 2Theta positions but {y.size} intensities"
            raise InputError(msg, path=where)
    else:
        start, end = _find(positions, "startPosition"), _find(positions, "endPosition")
        if start is None or end is None:
            raise InputError(
                "malformed XRDML: 2Theta positions need <startPosition> and <endPosition> or <listPositions>",
                path=where,
            )
        (x0,), (x1,) = _one(start, where), _one(end, where)
        x = np.linspace(x0, x1, y.size) if y.size > 1 else np.asarray([x0], dtype=np.float64)
    _validate(x, y, None, where)
    meta: dict[str, Any] = {"format": "xrdml", "n_scans": len(scans), "intensity_unit": node.get("unit")}
    time = _find(points, "commonCountingTime")
    if time is None:
        time = _find(points, "countingTimes")
    if time is not None:
        t = _floats(time, "the counting time", where)
        meta["counting_time"] = float(t[0]) if t.size == 1 else t  # seconds
    wavelength = None
    used = _find(root, "usedWavelength")
    if used is not None:
        for tag in ("kAlpha1", "kAlpha2", "ratioKAlpha2KAlpha1"):
            value = _find(used, tag)
            if value is not None:
                meta[tag] = float(_one(value, where)[0])
        wavelength = meta.get("kAlpha1")
    return MeasuredPattern(x, y, None, "two_theta", where, wavelength, meta)


def _one(node: ET.Element, where: str) -> np.ndarray:
    values = _floats(node, "the header", where)
    if values.size != 1:
        raise InputError(f"malformed XRDML: <{_local(node.tag)}> must hold one number", path=where)
    return values


def _format_row(values: Sequence[float], sep: str) -> str:
    return sep.join(repr(float(v)) for v in values) + "\n"


def write_pattern(
    path: str | os.PathLike,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    sigma: Sequence[float] | np.ndarray | None = None,
    axis: str = "two_theta",
    header: str | None = None,
) -> None:
    """Write a pattern as ``.xy``/``.xye``/``.dat``/``.txt`` (whitespace columns), ``.csv``, or a total-scattering
    ``.gr`` (``axis="r"``), ``.sq``/``.fq``/``.iq`` (``axis="q"``) file, whitespace columns as PDFgetX3 writes them.

    ``x`` is in the unit of ``axis`` (2θ in degrees, Q in Å⁻¹, r in Å, energy in eV); ``y`` and ``sigma``
    keep theirs. ``header`` is written as ``#`` comment lines before the column names. Values are written
    at full precision (``repr``). The file is replaced atomically: a failure leaves any old file as it was.
    """
    path = Path(path)
    where = str(path)
    suffix = path.suffix.lower()
    writable = (*TEXT_SUFFIXES, ".csv", *PDF_SUFFIXES)
    if suffix not in writable:
        raise InputError(
            f"cannot write pattern format {path.suffix!r}; expected one of {', '.join(writable)}", path=where
        )
    _check_axis(axis, where)
    if suffix in PDF_SUFFIXES and axis != _PDF_AXES[suffix]:
        raise InputError(
            f"a {suffix} file is read back on a {_PDF_AXES[suffix]} axis; this curve's axis is {axis}", path=where
        )
    columns = [np.asarray(x), np.asarray(y)] + ([] if sigma is None else [np.asarray(sigma)])
    names = [axis, "intensity", "sigma"][: len(columns)]
    for name, values in zip(names, columns, strict=True):
        if values.ndim != 1 or len(values) != len(columns[0]):
            raise InputError(
                f"{name} must be 1-D with {len(columns[0])} values like x, got shape {values.shape}", path=where
            )
    csv = suffix == ".csv"
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for comment in (header or "").splitlines():
            out.write(f"# {comment}".rstrip() + "\n")
        out.write(",".join(names) + "\n" if csv else "# " + " ".join(names) + "\n")
        for row in zip(*columns, strict=True):
            out.write(_format_row(row, "," if csv else " "))
