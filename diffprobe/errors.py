"""User-facing errors: anything the user can fix by changing their input.

The CLI turns a :class:`DiffprobeError` into one line on stderr and exit status 2.
"""


class DiffprobeError(Exception):
    """An input problem the user can fix; its message is one self-contained sentence."""


def a(word: str) -> str:
    """``word`` with its indefinite article: ``a sweep``, ``an approx``."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def plural(n: int, word: str) -> str:
    """``1 fold``, ``2 folds``."""
    return f"{n} {word}" + ("" if n == 1 else "s")
