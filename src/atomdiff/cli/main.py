"""The ``atomdiff`` command: a thin typer shell over :mod:`atomdiff.tasks`.

Errors that atomdiff raises on purpose (bad files, bad parameters) are printed as one line and exit with
code 2, without a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from atomdiff.cli import (
    amorphous,
    analyze,
    compare,
    data,
    demo,
    evaluate,
    gb,
    generate,
    index,
    phases,
    refine,
    simulate,
    solve,
    train,
    voxel,
)
from atomdiff.errors import AtomdiffError

app = typer.Typer(
    name="atomdiff",
    help="Atomic structures from diffraction, total scattering and XANES with periodic diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(simulate.app, name="simulate")
app.add_typer(train.app, name="train")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(data.app, name="data")
app.add_typer(voxel.app, name="voxel")
app.command("generate")(generate.generate)
app.command("solve")(solve.solve)
app.command("phases")(phases.phases)
app.command("refine")(refine.refine)
app.command("index")(index.index)
app.command("amorphous")(amorphous.amorphous)
app.command("analyze")(analyze.analyze)
app.command("compare")(compare.compare)
app.command("demo")(demo.demo)
app.command("gb")(gb.gb)

_stderr = Console(stderr=True)


def run(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` and return the exit code (0 success, 2 bad input)."""
    try:
        app(args=argv, prog_name="atomdiff")  # standalone mode: ends with SystemExit
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except AtomdiffError as exc:
        _stderr.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":  # pragma: no cover
    main()
