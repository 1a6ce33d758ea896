"""Self-contained HTML reports: images embedded as data URIs, a small canvas 3D viewer, no network access.

The viewer is ~60 lines of JavaScript written here (drag to rotate, wheel to zoom; atoms of the unit cell
and its edges, coloured by element with Jmol colours and sized by covalent radius). We do not bundle a
library such as 3Dmol.js (~0.5 MB) for this: a report must open offline, from a file, and stay small.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from atomdiff.files import atomic_path
from atomdiff.structure.structure import Structure

_VIEWER_JS = r"""
function atomdiffViewer(canvas, data) {
  const ctx = canvas.getContext('2d');
  let rx = -0.5, ry = 0.6, zoom = 1.0, drag = null;
  const pts = data.atoms.map(a => a.xyz);
  const centre = [0, 1, 2].map(k => data.corners.reduce((s, c) => s + c[k], 0) / data.corners.length);
  const extent = Math.max(...data.corners.map(c => Math.hypot(c[0] - centre[0], c[1] - centre[1], c[2] - centre[2])));
  function rot(p) {
    let x = p[0] - centre[0], y = p[1] - centre[1], z = p[2] - centre[2];
    let x1 = x * Math.cos(ry) + z * Math.sin(ry), z1 = -x * Math.sin(ry) + z * Math.cos(ry);
    let y1 = y * Math.cos(rx) - z1 * Math.sin(rx), z2 = y * Math.sin(rx) + z1 * Math.cos(rx);
    return [x1, y1, z2];
  }
  function draw() {
    const w = canvas.width, h = canvas.height, s = zoom * 0.42 * Math.min(w, h) / extent;
    ctx.clearRect(0, 0, w, h);
    const proj = p => { const r = rot(p); return [w / 2 + s * r[0], h / 2 - s * r[1], r[2]]; };
    ctx.strokeStyle = '#888'; ctx.lineWidth = 1;
    for (const [i, j] of data.edges) {
      const a = proj(data.corners[i]), b = proj(data.corners[j]);
      ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    }
    const order = data.atoms.map((a, i) => [proj(a.xyz), a]).sort((u, v) => u[0][2] - v[0][2]);
    for (const [p, a] of order) {
      const r = Math.max(2, s * a.r * 0.5);
      const g = ctx.createRadialGradient(p[0] - r / 3, p[1] - r / 3, r / 5, p[0], p[1], r);
      g.addColorStop(0, '#fff'); g.addColorStop(1, a.c);
      ctx.fillStyle = g; ctx.beginPath(); ctx.arc(p[0], p[1], r, 0, 2 * Math.PI); ctx.fill();
      ctx.strokeStyle = '#333'; ctx.lineWidth = 0.5; ctx.stroke();
    }
  }
  canvas.addEventListener('mousedown', e => { drag = [e.clientX, e.clientY]; });
  window.addEventListener('mouseup', () => { drag = null; });
  window.addEventListener('mousemove', e => {
    if (!drag) return;
    ry += (e.clientX - drag[0]) * 0.01; rx += (e.clientY - drag[1]) * 0.01; drag = [e.clientX, e.clientY]; draw();
  });
  canvas.addEventListener('wheel', e => { e.preventDefault(); zoom *= Math.exp(-e.deltaY * 0.001); draw(); });
  draw();
}
"""

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; }
.cand { display: flex; gap: 1.5em; align-items: flex-start; margin: 1.5em 0; flex-wrap: wrap; }
canvas { border: 1px solid #ccc; cursor: grab; }
img { max-width: 680px; }
.legend span { display: inline-block; margin-right: 1em; }
"""


def viewer_data(structure: Structure, pad: float = 0.02, images: bool = True) -> dict:
    """Atoms of the unit cell (with their periodic images on faces/edges/corners unless ``images`` is false)
    and the cell edges."""
    from ase.data import covalent_radii
    from ase.data.colors import jmol_colors

    frac = np.mod(structure.frac, 1.0) if images else structure.frac
    atoms = []
    shifts = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    for f, z in zip(frac, structure.numbers, strict=True):
        for s in shifts if images else shifts[:1]:
            g = f + np.array(s)
            if np.all(g <= 1.0 + pad):
                xyz = g @ structure.cell
                colour = "#" + "".join(f"{int(255 * c):02x}" for c in jmol_colors[int(z)])
                atoms.append({"xyz": [float(v) for v in xyz], "c": colour, "r": float(covalent_radii[int(z)])})
    corners = [list(map(float, np.array(s) @ structure.cell)) for s in shifts]
    edges = [
        (a, b)
        for a in range(8)
        for b in range(a + 1, 8)
        if sum(x != y for x, y in zip(shifts[a], shifts[b], strict=True)) == 1
    ]
    return {"atoms": atoms, "corners": corners, "edges": edges}


def _legend(structure: Structure) -> str:
    from ase.data import chemical_symbols
    from ase.data.colors import jmol_colors

    items = []
    for z in sorted(set(int(v) for v in structure.numbers)):
        colour = "#" + "".join(f"{int(255 * c):02x}" for c in jmol_colors[z])
        items.append(f'<span><b style="color:{colour}">&#9679;</b> {chemical_symbols[z]}</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def image_uri(path: str | os.PathLike) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def table_html(rows: Sequence[dict], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(path: str | os.PathLike, title: str, sections: Sequence[str]) -> None:
    """Write a complete HTML page made of ``sections`` (HTML fragments) with the viewer script included."""
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
        f"<script>{_VIEWER_JS}</script></head><body>"
        f"<h1>{html.escape(title)}</h1>" + "\n".join(sections) + "</body></html>"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")


def block_of(structure: Structure, max_atoms: int) -> tuple[Structure, float]:
    """The atoms of the corner block ``[0, f)³`` (fractional) of a periodic cell holding about ``max_atoms``
    atoms, as a non-periodic structure in the block ``f · cell``; and ``f`` (1 when the cell is small enough)."""
    n = len(structure)
    if n <= max_atoms:
        return structure, 1.0
    f = (max_atoms / n) ** (1.0 / 3.0)
    frac = np.mod(structure.frac, 1.0)
    inside = np.all(frac < f, axis=1)
    block = Structure(
        numbers=structure.numbers[inside], frac=frac[inside] / f, cell=structure.cell * f, pbc=(False,) * 3
    )
    return block, f


def structure_section(
    key: str,
    heading: str,
    structure: Structure,
    image: str | os.PathLike | None,
    notes: str,
    images: bool = True,
) -> str:
    """A candidate: its fit plot next to a rotatable view of the structure (periodic images on the cell's
    faces unless ``images`` is false, e.g. for a block cut out of a larger cell)."""
    data = json.dumps(viewer_data(structure, images=images))
    img = f'<img src="{image_uri(image)}" alt="fit">' if image is not None else ""
    return (
        f"<h2>{html.escape(heading)}</h2><p>{notes}</p><div class='cand'>{img}<div>"
        f"<canvas id='v{key}' width='380' height='380'></canvas>{_legend(structure)}</div></div>"
        f"<script>atomdiffViewer(document.getElementById('v{key}'), {data});</script>"
    )


def aic_paragraph(second) -> str:
    """A sentence on how the data rank a second candidate (``delta_aic`` against rank 1) beside the first."""
    verdict = (
        "the data rule it out beside rank 1"
        if second.delta_aic > 10
        else "the data cannot tell the two apart"
        if second.delta_aic < 2
        else "the data favour rank 1, not decisively"
    )
    text = (
        f"Rank 2 ({second.refinement.structure.formula}, {second.space_group}) against rank 1: "
        f"ΔAIC = {second.delta_aic:.1f} (χ² + 2 × parameters; > 10 decisive, < 2 indistinguishable): {verdict}."
    )
    return f"<p>{html.escape(text)}</p>"


def refined_sections(ranked, plots) -> list[str]:
    """One section per refined candidate: fit plot, 3D view, lattice and file."""
    sections = []
    for c, plot in zip(ranked, plots, strict=False):
        r = c.refinement
        a, b, cc, al, be, ga = r.structure.lattice_parameters
        notes = (
            f"Rwp {100 * r.rwp:.2f} % · a, b, c = {a:.4f}, {b:.4f}, {cc:.4f} Å · "
            f"α, β, γ = {al:.2f}, {be:.2f}, {ga:.2f}° · "
            f"shortest distance {c.min_distance:.3f} Å · file <code>{html.escape(c.file)}</code>"
        )
        sections.append(
            structure_section(
                str(c.rank), f"#{c.rank} {r.structure.formula} — {c.space_group}", r.structure, plot, notes
            )
        )
    return sections


def write_refine_report(path, pattern, result, rows, columns) -> None:
    """The report of ``atomdiff refine`` (:func:`atomdiff.tasks.refine.refine_structures`)."""
    source = html.escape(str(pattern.source or "pattern"))
    intro = (
        f"<p>Pattern <code>{source}</code>: {len(pattern.x)} points. {len(result.ranked)} structure(s) refined by "
        "Rietveld least squares (lattice, zero shift, profile, B per element, coordinates"
        f"{', each in its space group' if result.in_group else ', in P1'}), ranked by Rwp.</p>"
    )
    sections = [intro]
    if result.expected_rwp is not None and result.ranked:
        line = (
            f"Expected R factor of the counting noise Rexp = {100 * result.expected_rwp:.2f} %; the best structure "
            f"has Rwp/Rexp = {result.ranked[0].refinement.rwp / result.expected_rwp:.3f}."
        )
        sections.append(f"<p>{html.escape(line)}</p>")
    if len(result.ranked) > 1 and result.ranked[1].delta_aic is not None:
        sections.append(aic_paragraph(result.ranked[1]))
    sections += refined_sections(result.ranked, result.plots)
    sections.append("<h2>All structures</h2>" + table_html(rows, columns))
    write_report(path, "atomdiff refine", sections)


def write_solve_report(path, pattern, ranked, plots, candidates, settings, result=None) -> None:
    """The report of :func:`atomdiff.tasks.solve.solve` (``result``: its :class:`SolveResult`, for the cells
    indexing found, the expected R factor and the steps skipped)."""
    from atomdiff.tasks.solve import CANDIDATE_COLUMNS, candidate_row

    source = html.escape(str(pattern.source or "pattern"))
    intro = (
        f"<p>Pattern <code>{source}</code>: {len(pattern.x)} points, "
        f"{float(pattern.x[0]):g}–{float(pattern.x[-1]):g} "
        f"({'2θ, degrees' if pattern.axis == 'two_theta' else 'Q, Å⁻¹'})."
        f" {settings.candidates} candidates generated ({settings.steps} steps, physics guidance {settings.guidance:g},"
        f" seed {settings.seed}), refined by Rietveld least squares and ranked by Rwp.</p>"
    )
    sections = [intro]
    indexed = result.indexed if result is not None else []
    if result is not None and result.expected_rwp is not None:
        rexp = result.expected_rwp
        line = f"Expected R factor of the counting noise Rexp = {100 * rexp:.2f} %"
        if ranked:
            line += f"; the best candidate has Rwp/Rexp = {ranked[0].refinement.rwp / rexp:.3f}"
        if result.skipped:
            line += (
                f". A candidate fitted to the noise (Rwp ≤ {settings.stop_gof:g} Rexp), so these steps were skipped: "
                + ", ".join(result.skipped)
            )
        sections.append(f"<p>{html.escape(line)}.</p>")
    if len(ranked) > 1 and ranked[1].delta_aic is not None:
        sections.append(aic_paragraph(ranked[1]))
    reordered = [c for c in ranked if c.origin != "sample"]
    if reordered:
        items = "".join(f"<li>rank {c.rank}: {html.escape(c.origin)}</li>" for c in reordered)
        sections.append(
            "<p>Written candidates that are another ordering of a candidate's species that the radiation hardly "
            f"tells apart (refined and ranked with the rest; ΔAIC says whether the data decide):</p><ul>{items}</ul>"
        )
    if indexed:
        items = "".join(f"<li>{html.escape(cell.describe() + result.held_note(cell))}</li>" for cell in indexed)
        sections.append(f"<p>Cells from indexing the pattern's peaks, best first:</p><ul>{items}</ul>")
    sections += refined_sections(ranked, plots)
    ordered = sorted(candidates, key=lambda c: (c.rank is None, c.rank or 0, c.refinement.rwp))
    rows = [candidate_row(c) for c in ordered]
    sections.append("<h2>All candidates</h2>" + table_html(rows, CANDIDATE_COLUMNS))
    write_report(path, "atomdiff solve", sections)
