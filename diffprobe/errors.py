"""User-facing errors: anything the user can fix by changing their input.

The CLI turns a :class:`DiffprobeError` into one line on stderr and exit status 2.
"""


class DiffprobeError(Exception):
    """An input problem the user can fix; its message is one self-contained sentence."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, batch schedulers), raised where the process is, so that it unwinds as after
    Ctrl-C: whatever was measured is written before the process ends."""


def interruption(exc: BaseException) -> str:
    """How a run was interrupted, for its error message: ``SIGTERM`` or ``Ctrl-C``."""
    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"


def a(word: str) -> str:
    """``word`` with its indefinite article: ``a sweep``, ``an approx``."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def plural(n: int, word: str) -> str:
    """``1 fold``, ``2 folds``."""
    return f"{n} {word}" + ("" if n == 1 else "s")
