"""Set an attribute on one object for a while, and put back exactly what was there."""

from __future__ import annotations

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
