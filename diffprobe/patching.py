"""Set an attribute on one object for a while, and put back exactly what was there."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

_MISSING = object()


def patch_attr(obj: Any, name: str, value: Any) -> Callable[[], None]:
    """Set ``obj.name = value`` on the instance; the returned function restores the instance's previous state."""
    previous = vars(obj).get(name, _MISSING)
    setattr(obj, name, value)

    def undo() -> None:
        if previous is _MISSING:
            if name in vars(obj):
                delattr(obj, name)
        else:
            setattr(obj, name, previous)

    return undo


class Patches:
    """One undo list for everything a context manager patches: attributes (:meth:`set`), hooks (:meth:`hook`) and
    any other change with its undo function (:meth:`add`); :meth:`restore` undoes them all, last first
    (``contextlib.ExitStack``'s order), and leaves the list empty for the next use."""

    def __init__(self):
        self._stack = contextlib.ExitStack()

    def set(self, obj: Any, name: str, value: Any) -> None:
        """``obj.name = value`` until :meth:`restore` (see :func:`patch_attr`)."""
        self._stack.callback(patch_attr(obj, name, value))

    def hook(self, handle: Any) -> None:
        """A torch hook handle, removed on :meth:`restore`."""
        self._stack.callback(handle.remove)

    def add(self, undo: Callable[[], Any]) -> None:
        self._stack.callback(undo)

    def restore(self) -> None:
        self._stack.close()
