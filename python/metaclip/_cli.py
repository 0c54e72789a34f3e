"""What every metaclip command line shares: known errors become one line on stderr and exit
status 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from metaclip.exceptions import MetaclipError

F = TypeVar("F", bound=Callable[..., Any])

# Errors that are about the user's input or machine (a bad file, a full disk, a missing
# tool), whose message says what to fix; anything else is a bug and keeps its traceback.
INPUT_ERRORS: tuple[type[BaseException], ...] = (MetaclipError, ValueError, OSError, RuntimeError)


def friendly(f: F | None = None, *, errors: tuple[type[BaseException], ...] = INPUT_ERRORS):
    """Decorate a click command: ``errors`` print ``error: <message>`` and exit with 2."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return fn(*a, **kw)
            except BrokenPipeError:  # stdout closed early (`| head`): click exits quietly
                raise
            except errors as e:
                click.echo(f"error: {e}", err=True)
                sys.exit(2)

        return wrapper  # type: ignore[return-value]

    return wrap if f is None else wrap(f)
