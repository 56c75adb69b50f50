"""Checks shared by the command-line tests: a refused input is one line on stderr and exit status 2."""

import contextlib
import json
import subprocess
import sys

from diffprobe.cli import main


def one_line_error(capsys, argv, *needles) -> str:
    """Run ``diffprobe argv``; assert exit status 2 and exactly one ``diffprobe: error:`` line on stderr holding
    every needle, no traceback. Returns that line."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("diffprobe: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@contextlib.contextmanager
def held_elsewhere(code: str, folder, ready: str):
    """Run ``python -c code folder`` in another process until it prints ``ready`` (it then holds ``folder``), yield,
    then kill it (SIGKILL: the OS releases whatever it held)."""
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == ready
        yield proc
    finally:
        proc.kill()
        proc.wait()


def strict_json(text: str):
    """``json.loads`` that refuses NaN and Infinity (standard JSON only)."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)
