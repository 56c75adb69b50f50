"""User-facing errors: anything the user can fix by changing their input.

The CLI turns a :class:`DiffprobeError` into one line on stderr and exit status 2.
"""


class DiffprobeError(Exception):
    """An input problem the user can fix; its message is one self-contained sentence."""
