"""What every command shares: the Typer app with its error funnel, and the two consoles (results on stdout;
errors, warnings and progress on stderr, so that a redirected log keeps them apart)."""

from __future__ import annotations

import sys

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import OnnxbenchError

# Piped output (CI logs) gets a wide console rather than rich's 80-column default, so tables stay readable.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
if not sys.stdout.isatty():  # the same for `--help`, unless Typer's TERMINAL_WIDTH says otherwise
    from typer import rich_utils

    if rich_utils.MAX_WIDTH is None:
        rich_utils.MAX_WIDTH = 160

#: Exit statuses (README "Exit status").
OK, FAILED_CELLS, BAD_INPUT, NOTHING_MEASURED, DISAGREED, INTERRUPTED = 0, 1, 2, 3, 4, 130


def fail(message: str, code: int = BAD_INPUT) -> None:
    """Print one error line on stderr and exit with status ``code`` (2: bad input). ``message`` is plain text:
    square brackets in it (``[onnx]``, ``[shapes.tiny]``) are printed, not read as markup."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One warning line on stderr (``message`` plain text, as in :func:`fail`)."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """One informational line on stderr (what the run is doing, what a flag changed; plain text)."""
    err.print(escape(message), highlight=False, soft_wrap=True)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can span pages)."""
    text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else "(no message)"


#: Set to 1 to see the traceback of an internal error instead of its one-line summary.
DEBUG_ENV = "ONNXBENCH_DEBUG"


#: Errors of the command line itself. Typer >= 0.22 raises those of its own copy of click (a subclass of
#: ``typer.TyperException``), older Typer click's own.
_USAGE_ERRORS = (click.exceptions.ClickException,) + ((typer.TyperException,) if hasattr(typer, "TyperException")
                                                     else ())


class _Commands(TyperGroup):
    """The command group: the package's own errors (:class:`onnxbench.errors.OnnxbenchError`, bad input) and
    errors of the command line (an unknown option, a value of the wrong type) are one error line and exit status
    2; anything else that escapes a command is a fault of onnxbench or a library, one line and exit status 1
    (``$ONNXBENCH_DEBUG=1`` re-raises it with its traceback)."""

    def invoke(self, ctx):
        import os

        try:
            return super().invoke(ctx)
        except OnnxbenchError as exc:
            fail(first_line(exc))
        except (click.exceptions.Exit, click.exceptions.Abort, typer.Exit, typer.Abort, KeyboardInterrupt,
                SystemExit):
            raise
        except _USAGE_ERRORS as exc:  # an unknown option or command, a value of the wrong type, a missing argument
            command = f"onnxbench {ctx.invoked_subcommand} --help" if ctx.invoked_subcommand else "onnxbench --help"
            fail(f"{exc.format_message()} ({command} lists what it takes)", getattr(exc, "exit_code", BAD_INPUT))
        except BrokenPipeError:  # the reader went away (`... | head`): click's main ends quietly, status 1
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            fail(f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with {DEBUG_ENV}=1 for the "
                 "traceback)", code=FAILED_CELLS)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"onnxbench {version('onnxbench')}")
        raise typer.Exit()


app = typer.Typer(cls=_Commands, help="ONNX export and cross-runtime benchmark suite.", no_args_is_help=True,
                  pretty_exceptions_enable=False)


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    """ONNX export and cross-runtime benchmark suite (README.md; docs/ for the manual)."""
