"""The ``diffprobe`` command: a thin shell over the Python API. Only this package prints.

Each command imports what it calls inside its function: ``--help``, ``--version`` and argument errors then answer
in about a tenth of a second, without loading torch and diffusers (seconds).
"""

from __future__ import annotations

import sys

import typer

from diffprobe.cli import approx, runs, tools
from diffprobe.cli.common import app
from diffprobe.errors import DiffprobeError

# the commands, in the order --help lists them
for command in (runs.profile, runs.sweep, runs.report, runs.compare, runs.sparsity, approx.approx, tools.accel,
                tools.models):
    app.command()(command)
app.add_typer(tools.hardware_app, name="hardware")
app.add_typer(tools.kernels_app, name="kernels")


def _click_exceptions():
    """The click exceptions typer uses: ``UsageError`` from the vendored ``typer._click`` (typer >= 0.20) or
    click, ``Abort`` and ``Exit`` from wherever that typer defines them."""
    from types import SimpleNamespace

    try:
        import typer._click.exceptions as usage
    except ImportError:  # older typer on top of click
        import click.exceptions as usage
    control = usage if hasattr(usage, "Abort") else __import__("typer.exceptions", fromlist=["Abort"])
    return SimpleNamespace(UsageError=usage.UsageError, Abort=control.Abort, Exit=control.Exit,
                           NoArgsIsHelpError=getattr(usage, "NoArgsIsHelpError", ()))


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit status 2."""
    import signal

    from diffprobe.errors import Terminated

    def on_sigterm(signum, frame):  # unwind as after Ctrl-C: what was measured is written, then exit 143
        _terminated.append(signum)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (an embedding program's worker): its own handling stays
        previous = None
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_terminated: list[int] = []  # SIGTERM received (click and typer turn the interruption into Abort / Exit(130))


def _interrupted() -> int:
    sigterm = bool(_terminated)
    sys.stderr.write("diffprobe: interrupted" + (" (SIGTERM)" if sigterm else "") + "\n")
    return 143 if sigterm else 130


def _main(argv: list[str] | None) -> int:
    _terminated.clear()
    cexc = _click_exceptions()
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="diffprobe", standalone_mode=False)
    except DiffprobeError as exc:
        sys.stderr.write(f"diffprobe: error: {exc}\n")
        return 2
    except cexc.UsageError as exc:
        if isinstance(exc, cexc.NoArgsIsHelpError):  # the help of the (sub)command that was called bare
            ctx = getattr(exc, "ctx", None)
            sys.stdout.write((ctx.get_help() if ctx is not None else command.get_help(command.make_context(
                "diffprobe", ["--help"], resilient_parsing=True))) + "\n")
            return 0
        message = " ".join(exc.format_message().split())
        sys.stderr.write(f"diffprobe: error: {message}\n")
        return 2
    except cexc.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _interrupted()
        sys.stderr.write("diffprobe: aborted\n")
        return 130
    except cexc.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    if isinstance(rv, int) and not isinstance(rv, bool) and rv:  # typer turns Ctrl-C into Exit(130) and returns it
        if rv == 130:
            return _interrupted()
        return rv
    return 0


if __name__ == "__main__":
    sys.exit(main())
