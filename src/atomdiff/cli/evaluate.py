"""``atomdiff evaluate csp|denovo``: benchmark a crystal diffusion model on a test set."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from atomdiff.cli.generate import BatchSize, ModelOpt, SamplerOpt, Steps, check_sampler, progress_bar
from atomdiff.cli.options import (
    CfgScale,
    DeviceOpt,
    FinishGuidance,
    FinishSigma,
    FinishSteps,
    GuidanceInterval,
    RepulsionOpt,
    RestartSigma,
    RestartSteps,
    Seed,
    check_output_suffix,
    network_on,
    parse_interval,
)
from atomdiff.diffusion.crystal import DEFAULT_CFG_SCALE
from atomdiff.errors import InputError

app = typer.Typer(
    help="Benchmark models: csp (structure prediction), denovo (generation), amorphous (spectra-guided a-C).",
    no_args_is_help=True,
)
console = Console()

Data = Annotated[Path, typer.Option("--data", help="Test structures: CSV of CIFs (CDVAE/DiffCSP), CIF or extxyz.")]
Output = Annotated[Path, typer.Option("--output", "-o", help="Result JSON file.")]


def _print_table(title: str, result: dict[str, Any], keys: list[tuple[str, str, bool]]) -> None:
    table = Table(title=title, min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, percent in keys:
        value = result[key]
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            text = "–"
        elif percent:
            text = f"{100 * value:.2f} %"
        else:
            text = f"{value:.4f}"
        table.add_row(label, text)
    table.add_row("wall time", f"{result['wall_time_s']:.1f} s")
    console.print(table)


@app.command("csp")
def csp(
    data: Data,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model folder (model.safetensors + config.json) or shipped name to sample."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Result JSON file.")] = None,
    samples: Annotated[int, typer.Option("--samples", "-k", min=1, help="Samples per test structure (top-k).")] = 20,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Evaluate the first LIMIT test structures.")] = 500,
    steps: Steps = 200,
    sampler: SamplerOpt = "pc",
    seed: Seed = 0,
    batch_size: BatchSize = 256,
    patterns: Annotated[
        str | None,
        typer.Option(
            "--patterns",
            help="Pattern-conditioned model: condition on a simulated powder pattern of each test structure "
            "(random instrument) ('matched'), or of the next one ('mismatched', a control).",
        ),
    ] = None,
    cfg: CfgScale = DEFAULT_CFG_SCALE,
    save_samples: Annotated[
        Path | None,
        typer.Option("--save-samples", help="Also store the samples (.npz) to score again with --from-samples."),
    ] = None,
    score: Annotated[
        bool,
        typer.Option(
            "--score/--no-score",
            help="Match the samples (pymatgen); --no-score with --save-samples only samples, e.g. on a GPU "
            "machine without pymatgen.",
        ),
    ] = True,
    from_samples: Annotated[
        Path | None,
        typer.Option(
            "--from-samples", help="Score samples stored by --save-samples (same --data and --limit; no --model)."
        ),
    ] = None,
    device: DeviceOpt = "cpu",
    repulsion: RepulsionOpt = 0.0,
) -> None:
    """Crystal structure prediction: match rate and RMSE (pymatgen StructureMatcher, DiffCSP's tolerances)
    of samples with each test structure's exact atoms, top-k and top-1, plus validity."""
    from atomdiff.structure.io import read_structures
    from atomdiff.tasks.evaluate import evaluate_csp, load_csp_samples, score_csp, write_result
    from atomdiff.weights import load_crystal_model

    if (model is None) == (from_samples is None):
        raise InputError("give either --model (to sample) or --from-samples (to score stored samples)")
    if score and output is None:
        raise InputError("--output is needed to write the scores (or --no-score with --save-samples)")
    if not score and (save_samples is None or from_samples is not None):
        raise InputError("--no-score only samples: it needs --model and --save-samples")
    if output is not None:
        check_output_suffix(output, (".json",), "--output")
    if save_samples is not None:
        check_output_suffix(save_samples, (".npz",), "--save-samples")
    check_sampler(sampler)
    tests = read_structures(data, limit=limit)
    if from_samples is not None:
        groups, settings = load_csp_samples(from_samples, tests)
        with progress_bar("matched") as update:
            t0 = time.perf_counter()
            result = {**score_csp(tests, groups, update), **settings, "wall_time_s": time.perf_counter() - t0}
        model = settings.get("model", "unrecorded")  # files written by the Python API may not name it
        samples, steps, sampler = settings["samples"], settings.get("steps", "?"), settings.get("sampler", "?")
        patterns, cfg = settings.get("patterns"), settings.get("cfg_scale") or cfg
        result["samples_file"] = str(from_samples)
    else:
        diffusion = network_on(load_crystal_model(model), device)
        with progress_bar("test structures") as update:
            result = evaluate_csp(
                diffusion,
                tests,
                samples,
                steps=steps,
                sampler=sampler,
                seed=seed,
                batch_size=batch_size,
                progress=update,
                patterns=patterns,
                cfg_scale=cfg,
                save_samples=save_samples,
                saved_settings={"model": str(model), "data": str(data)},
                score=score,
                repulsion=repulsion,
            )
        if not score:
            console.print(
                f"{len(tests) * samples} samples of {len(tests)} test structures written to {save_samples} "
                f"in {result['sample_time_s']:.1f} s"
            )
            return
    result = {**result, "model": str(model), "data": str(data)}
    write_result(result, output)
    _print_table(
        f"CSP on {len(tests)} structures, {samples} samples each, {steps} {sampler} steps"
        + (f", conditioned on {patterns} patterns (cfg {cfg:g})" if patterns else ""),
        result,
        [
            *(
                [("match_rate", f"match rate (top-{samples})", True), ("rmse", f"RMSE (top-{samples})", False)]
                if samples > 1
                else []
            ),
            ("match_rate_top1", "match rate (top-1)", True),
            ("rmse_top1", "RMSE (top-1)", False),
            ("structural_validity", "structural validity", True),
            ("composition_validity", "composition validity", True),
        ],
    )
    console.print(f"wrote {output}")


@app.command("denovo")
def denovo(
    model: ModelOpt,
    data: Data,
    output: Output,
    number: Annotated[int, typer.Option("-n", "--number", min=1, help="Structures to generate.")] = 1000,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use the first LIMIT test structures.")] = None,
    steps: Steps = 200,
    sampler: SamplerOpt = "pc",
    seed: Seed = 0,
    batch_size: BatchSize = 256,
    struct_cutoff: Annotated[
        float | None, typer.Option(min=0.0, help="Structural fingerprint cutoff for coverage (default 0.15).")
    ] = None,
    comp_cutoff: Annotated[
        float | None, typer.Option(min=0.0, help="Composition fingerprint cutoff for coverage (default 0.1).")
    ] = None,
    device: DeviceOpt = "cpu",
    repulsion: RepulsionOpt = 0.0,
) -> None:
    """De novo generation: validity, coverage (our fingerprints, not CDVAE's), and Wasserstein distances of
    density and number of elements to the test set."""
    from atomdiff.structure.io import read_structures
    from atomdiff.tasks.evaluate import COMP_CUTOFF, STRUCT_CUTOFF, evaluate_denovo, write_result
    from atomdiff.weights import load_crystal_model

    check_output_suffix(output, (".json",), "--output")
    check_sampler(sampler)
    tests = read_structures(data, limit=limit)
    diffusion = network_on(load_crystal_model(model), device)
    with progress_bar("denoising") as update:
        result = evaluate_denovo(
            diffusion,
            tests,
            number,
            steps=steps,
            sampler=sampler,
            seed=seed,
            batch_size=batch_size,
            struct_cutoff=STRUCT_CUTOFF if struct_cutoff is None else struct_cutoff,
            comp_cutoff=COMP_CUTOFF if comp_cutoff is None else comp_cutoff,
            progress=update,
            repulsion=repulsion,
        )
    result = {**result, "model": str(model), "data": str(data)}
    write_result(result, output)
    _print_table(
        f"De novo: {number} samples vs {len(tests)} test structures, {steps} {sampler} steps",
        result,
        [
            ("validity", "validity", True),
            ("structural_validity", "structural validity", True),
            ("composition_validity", "composition validity", True),
            ("coverage_recall", "coverage recall (own fingerprints)", True),
            ("coverage_precision", "coverage precision (own fingerprints)", True),
            ("wdist_density", "W1 density (g/cm³)", False),
            ("wdist_num_elements", "W1 number of elements", False),
        ],
    )
    console.print(f"wrote {output}")


@app.command("amorphous")
def amorphous(
    data: Annotated[Path, typer.Option("--data", help="Labelled data set: ROOT/poscar/<split>/, ROOT/xanes/<split>/.")],
    output: Output,
    model: Annotated[str, typer.Option("--model", "-m", help="Amorphous prior.")] = "amorphous_carbon",
    surrogate: Annotated[str, typer.Option(help="XANES surrogate.")] = "xanes_carbon_k",
    split: Annotated[str, typer.Option(help="Split of the data set to evaluate on.")] = "test",
    samples: Annotated[int, typer.Option("--samples", "-k", min=1, help="Samples per test cell.")] = 5,
    steps: Annotated[int, typer.Option(min=1, help="Noise levels of the sampler.")] = 100,
    guidance: Annotated[float, typer.Option(min=0.0, help="Guidance strength.")] = 1.0,
    guidance_mode: Annotated[str, typer.Option(help="tweedie, dps or noisy.")] = "tweedie",
    guidance_start: Annotated[
        float | None,
        typer.Option(
            min=0.001, help="Guide only at noise levels σ ≤ this (Å); default 0.3, as XANES in `atomdiff amorphous`."
        ),
    ] = None,
    restarts: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Re-noise each guided sample to --restart-sigma and denoise it again this many times (not unguided "
            "ones); default 2, as a guided `atomdiff amorphous`.",
        ),
    ] = None,
    restart_sigma: RestartSigma = 0.2,
    restart_steps: RestartSteps = 20,
    finish_steps: FinishSteps = 0,
    finish_sigma: FinishSigma = 0.1,
    finish_guidance: FinishGuidance = 0.1,
    steer_density: Annotated[float, typer.Option(help="Density (g/cm³) of the steering experiment.")] = 2.5,
    steer_samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Samples per target of the steering experiment; default 20: a 216-atom a-C cell's sp3 varies by "
            "0.02–0.05 from sample to sample, so fewer hide the trend (docs/amorphous.md).",
        ),
    ] = None,
    steer_guidance: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Guidance strength of the steering experiment; default 2 (with 20 samples and unclipped steps, 1 did "
            "not move sp3 monotonically, 2 did for two of three seeds; with clipped steps both rise over four targets "
            "and the last step falls for some seeds; docs/amorphous.md).",
        ),
    ] = None,
    references: Annotated[
        Path | None,
        typer.Option(help="Folder of reference cells (extxyz) for the sp3-vs-density trend, e.g. the C-GAP-17 set."),
    ] = None,
    experiments: Annotated[
        str, typer.Option(help="Comma-separated subset of: test, steering, densities.")
    ] = "test,steering,densities",
    seed: Seed = 0,
) -> None:
    """Amorphous generation vs reference cells: guided vs unguided on the test cells, steering between the
    data set's graphite and diamond spectra (poscar/misc), and sp3 vs density of unconditional samples."""
    import numpy as np

    from atomdiff.cli.progress import stage_bars
    from atomdiff.data.spectra import read_spectra_file, read_spectrum_dataset
    from atomdiff.diffusion.amorphous import SampleOptions, density_cell
    from atomdiff.diffusion.guidance.spectra import STEP_CLIP
    from atomdiff.structure.elements import chemical_symbols
    from atomdiff.structure.io import read_structures
    from atomdiff.structure.structure import Structure
    from atomdiff.tasks.amorphous import GUIDED_RESTARTS, XANES_START, default_min_distance
    from atomdiff.tasks.evaluate import write_result
    from atomdiff.tasks.evaluate_amorphous import (
        STEER_GUIDANCE,
        STEER_SAMPLES,
        density_trend,
        evaluate_test_cells,
        headline_fraction,
        steering,
    )
    from atomdiff.weights import load_amorphous_model, load_xanes_surrogate

    check_output_suffix(output, (".json",), "--output")
    chosen = {e.strip() for e in experiments.split(",") if e.strip()}
    if not chosen or chosen - {"test", "steering", "densities"}:
        raise InputError(f"--experiments must list some of test, steering, densities; got {experiments!r}")
    prior, xanes = load_amorphous_model(model), load_xanes_surrogate(surrogate)
    guidance_start = guidance_start if guidance_start is not None else XANES_START
    cells = read_spectrum_dataset(data, split, xanes.absorber)
    restarts = restarts if restarts is not None else GUIDED_RESTARTS
    steer_samples = steer_samples if steer_samples is not None else STEER_SAMPLES
    steer_guidance = steer_guidance if steer_guidance is not None else STEER_GUIDANCE
    options = SampleOptions(
        steps=steps,
        restarts=restarts,
        restart_sigma=restart_sigma,
        restart_steps=restart_steps,
        finish_steps=finish_steps,
        finish_sigma=finish_sigma,
        finish_guidance=finish_guidance,
        min_distance=default_min_distance(chemical_symbols[xanes.absorber]),
    )
    result: dict[str, Any] = {
        "guidance_start": guidance_start,
        "model": model,
        "surrogate": surrogate,
        "data": str(data),
        "split": split,
        "samples": samples,
        "steps": steps,
        "guidance": guidance,
        "guidance_mode": guidance_mode,
        "guidance_clip": STEP_CLIP,  # every guided run here clips at the default (recorded for comparisons)
        "restarts": restarts,
        "steer_samples": steer_samples,
        "steer_guidance": steer_guidance,
        "restart_sigma": restart_sigma,
        "restart_steps": restart_steps,
        "finish_steps": finish_steps,
        "finish_sigma": finish_sigma,
        "finish_guidance": finish_guidance,
        "seed": seed,
    }
    with stage_bars(["test cells", "steering", "densities"]) as bar:
        if "test" in chosen:
            result["test_cells"] = evaluate_test_cells(
                prior, xanes, cells, samples, options, guidance, guidance_mode, seed, bar, guidance_start
            )
        misc = Path(data) / "xanes" / "misc"
        if "steering" in chosen and (misc / "graphite.csv").is_file() and (misc / "diamond.csv").is_file():
            low = read_spectra_file(misc / "graphite.csv").mean(0)
            high = read_spectra_file(misc / "diamond.csv").mean(0)
            n = len(cells[0].structure)
            template = Structure(
                np.full(n, xanes.absorber), np.zeros((n, 3)), density_cell(np.full(n, xanes.absorber), steer_density)
            )
            result["steering"] = steering(
                prior,
                xanes,
                low,
                high,
                template,
                samples=steer_samples,
                options=options,
                strength=steer_guidance,
                mode=guidance_mode,
                seed=seed,
                progress=bar,
                sigma_start=guidance_start,
            )
        if "densities" in chosen and references is not None:
            refs = [s for f in sorted(Path(references).glob("*.extxyz")) for s in read_structures(f)]
            result["density_trend"] = density_trend(prior, refs, samples=3, options=options, seed=seed, progress=bar)
    write_result(result, output)
    head = headline_fraction(xanes.absorber)
    if "test_cells" in result:
        summary = result["test_cells"]["summary"]
        table = Table(title=f"Amorphous generation on {len(cells)} {split} cells, {samples} samples each")
        table.add_column("metric")
        table.add_column("guided", justify="right")
        table.add_column("unguided", justify="right")
        for key in (f"{head}_error", "rdf_distance", "adf_distance", "spectrum_misfit"):
            table.add_row(key, f"{summary['guided_' + key]:.4f}", f"{summary['unguided_' + key]:.4f}")
        console.print(table)
    if "steering" in result:
        _print_steering(result["steering"], "Steering graphite→diamond")
    if "density_trend" in result:
        difference = result["density_trend"][f"mean_abs_{head}_difference"]
        console.print(f"{head} vs density: mean |Δ{head}| {difference:.3f}")
    console.print(f"wrote {output}")


def _print_steering(steering: dict[str, Any], title: str) -> None:
    head = steering["fraction"]
    table = Table(title=f"{title} at {steering['density']:.2f} g/cm³, {steering['atoms']} atoms")
    for column in ("diamond-like", f"{head} mean", "std", "samples", "step ± s.e.", "misfit"):
        table.add_column(column, justify="right")
    steps = [None, *steering.get("steps", [])]
    for row, step in zip(steering["targets"], steps, strict=False):
        change = "" if step is None else f"{step['difference']:+.4f} ± {step['standard_error']:.4f}"
        if step is not None and step["significant_fall"]:
            change += " (falls)"
        table.add_row(
            f"{row['fraction_high']:.2f}",
            f"{row[head + '_mean']:.3f}",
            f"{row[head + '_std']:.3f}",
            str(len(row[head])),
            change,
            f"{row['spectrum_misfit']:.3g}",
        )
    if "unguided" in steering:
        row = steering["unguided"]
        table.add_row(
            "unguided", f"{row[head + '_mean']:.3f}", f"{row[head + '_std']:.3f}", str(len(row[head])), "", ""
        )
    console.print(table)
    line = f"monotonic means: {steering['monotonic']}; a step that falls by > 2 s.e.: {steering['significant_fall']}"
    if steering.get("rank_correlation") is not None:
        line += f"; Spearman ρ {steering['rank_correlation']:.3f} (p = {steering['rank_p_value']:.2g})"
    if "runs" in steering:
        line += f"; {steering['runs_monotonic']} of {steering['runs']} runs monotonic alone"
    console.print(line)


@app.command("steering-pool")
def steering_pool(
    results: Annotated[
        list[Path], typer.Argument(help="Results of `atomdiff evaluate amorphous --experiments steering` (JSON).")
    ],
    output: Output,
) -> None:
    """Pool steering runs (other seeds, same targets): each target's samples together, with the trend's
    statistics (step differences with standard errors, rank correlation) of the pool."""
    import json

    from atomdiff.tasks.evaluate import write_result
    from atomdiff.tasks.evaluate_amorphous import pool_steering

    check_output_suffix(output, (".json",), "--output")
    runs = []
    for path in results:
        try:
            result = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: cannot read a JSON result ({error})") from error
        if not isinstance(result, dict) or "steering" not in result:
            raise InputError(f"{path}: no 'steering' result in it (run --experiments steering)")
        runs.append(result["steering"])
    pooled = pool_steering(runs)
    pooled["sources"] = [str(p) for p in results]
    write_result(pooled, output)
    _print_steering(pooled, f"Steering, {len(runs)} runs pooled")
    console.print(f"wrote {output}")


@app.command("xanes")
def xanes(
    data: Annotated[Path, typer.Option("--data", help="Labelled data set: ROOT/poscar/<split>/, ROOT/xanes/<split>/.")],
    output: Output,
    surrogate: Annotated[str, typer.Option(help="XANES surrogate: folder or shipped name.")] = "xanes_carbon_k",
    split: Annotated[str, typer.Option(help="Split of the data set to evaluate on.")] = "test",
) -> None:
    """Accuracy of a XANES surrogate: per-atom and per-structure MSE and R² on a labelled split."""
    from atomdiff.data.spectra import read_spectrum_dataset
    from atomdiff.tasks.evaluate import write_result
    from atomdiff.tasks.evaluate_amorphous import surrogate_scores
    from atomdiff.weights import load_xanes_surrogate

    check_output_suffix(output, (".json",), "--output")
    model = load_xanes_surrogate(surrogate)
    items = read_spectrum_dataset(data, split, model.absorber)
    result = {"surrogate": surrogate, "data": str(data), "split": split, **surrogate_scores(model, items)}
    write_result(result, output)
    table = Table(title=f"XANES surrogate on {len(items)} {split} structures ({result['atoms']} atoms)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("per_atom_mse", "per_atom_r2", "per_structure_mse", "per_structure_r2"):
        value = result[key]
        table.add_row(key, "–" if value is None else f"{value:.5f}")
    console.print(table)
    console.print(f"wrote {output}")


@app.command("ordered")
def ordered(
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Training boxes with info['phase'] (`atomdiff data ordered`).")
    ],
    output: Output,
    voxel_model: Annotated[
        str | None, typer.Option("--voxel-model", help="Voxel model: folder or shipped name (default: voxel_ordered).")
    ] = None,
    point_model: Annotated[
        str | None,
        typer.Option(
            "--point-model",
            help="Point-cloud model trained on the same data: `atomdiff train crystal` (box held, species fixed) "
            "or `atomdiff train amorphous`.",
        ),
    ] = None,
    skip_voxel: Annotated[bool, typer.Option(help="Evaluate only the point-cloud model.")] = False,
    number: Annotated[int, typer.Option("-n", "--number", min=1, help="Samples per model.")] = 64,
    steps: Annotated[int, typer.Option(min=1, help="Denoising steps of both models.")] = 100,
    sampler: Annotated[str, typer.Option(help="Voxel sampler: ddpm or ddim.")] = "ddpm",
    guidance: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Classifier-free guidance of a phase-conditioned voxel model (1: none; default as voxel generate).",
        ),
    ] = 2.0,
    guidance_interval: GuidanceInterval = None,
    seed: Seed = 0,
) -> None:
    """The ordered-phase experiment: fraction of perfectly ordered samples per phase for the voxel model and a
    point-cloud model trained on the same boxes (phases by common-neighbour analysis, physics.ordering).

    Writes the result JSON and the samples next to it (STEM_voxel.extxyz, STEM_point_cloud.extxyz)."""
    from atomdiff.cli.progress import stage_bars
    from atomdiff.diffusion.amorphous import SampleOptions
    from atomdiff.diffusion.voxel import SAMPLERS
    from atomdiff.structure.io import read_structures, write_structures
    from atomdiff.tasks.evaluate import write_result
    from atomdiff.tasks.evaluate_ordered import evaluate_ordered
    from atomdiff.weights import load_point_cloud_model, load_voxel_model

    check_output_suffix(output, (".json",), "--output")
    if sampler not in SAMPLERS:
        raise InputError(f"--sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    structures = read_structures(data)
    unlabelled = [k for k, s in enumerate(structures) if "phase" not in s.info]
    if unlabelled:
        raise InputError(
            f"structure {unlabelled[0]} has no 'phase' in its info (make the data with `atomdiff data ordered`)",
            path=str(data),
        )
    voxel = None if skip_voxel else load_voxel_model(voxel_model)
    point = load_point_cloud_model(point_model) if point_model else None
    if voxel is None and point is None:
        raise InputError("nothing to evaluate: give --point-model or drop --skip-voxel")
    with stage_bars(["voxel", "point cloud"]) as bar:
        result = evaluate_ordered(
            structures,
            voxel,
            point,
            number=number,
            steps=steps,
            voxel_sampler=sampler,
            guidance=guidance,
            guidance_interval=parse_interval(guidance_interval),
            point_options=SampleOptions(steps=steps),
            seed=seed,
            progress=lambda stage: lambda done, total: bar(stage, done, total),
        )
    result.update(data=str(data), voxel_model=None if skip_voxel else (voxel_model or "voxel_ordered"))
    result["point_model"] = point_model
    for key in ("voxel", "point_cloud"):
        samples = result.pop(f"{key}_structures", None)
        if samples is not None:
            write_structures(samples, output.with_name(f"{output.stem}_{key}.extxyz"))
    write_result(result, output)
    table = Table(title=f"Perfectly ordered samples ({number} per model, {steps} steps)")
    table.add_column("phase")
    table.add_column("training data", justify="right")
    columns = [k for k in ("voxel", "point_cloud") if k in result]
    for key in columns:
        table.add_column(key.replace("_", " "), justify="right")

    def cell(summary: dict[str, Any], phase: str) -> str:
        row = summary["per_phase"].get(phase)
        return "–" if row is None else f"{row['perfect']}/{row['samples']}"

    from atomdiff.physics.ordering import PHASES

    for phase in PHASES:
        table.add_row(phase, cell(result["reference"], phase), *(cell(result[k], phase) for k in columns))
    table.add_row(
        "all",
        f"{result['reference']['perfect_fraction']:.1%}",
        *(f"{result[k]['perfect_fraction']:.1%}" for k in columns),
    )
    console.print(table)
    for key in columns:
        if "perfect_any_phase" in result[key]:
            perfect = result[key]["perfect_any_phase"]
            console.print(f"{key.replace('_', ' ')}: {perfect} of {number} samples are perfect crystals of any phase")
    console.print(f"wrote {output}")
