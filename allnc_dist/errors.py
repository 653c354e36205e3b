"""How `allnc` and the jobs (`jobs/*.py`) end on an error they can name: one line on stderr that says
the cause and the file or server it is about (`allnc: checksum mismatch: /data/train-000003.tar has
sha256 ...`), and an exit status by kind. `--debug` prints the traceback first. Any other exception
is a bug and ends the command with Python's traceback (status 1).

| status | kind | raised as |
|---|---|---|
| 2 | the config or the command line | `ConfigError`, pydantic's `ValidationError`, `FileExistsError` (a folder holding another run or shard set) |
| 3 | input data | `CorruptShardError`, `IndexFormatError`, `BadSampleError`, `ShardWriteError`, `DataError`, `FileNotFoundError` |
| 4 | the tracking server | `TrackingServerError` |

Errors raised inside Ray Train workers reach the driver wrapped (`WorkerGroupError`, `ControllerError`,
`RayTaskError`); they are reported by the worker's own exception.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable

from pydantic import ValidationError

from .config import ConfigError

EXIT_CONFIG = 2  # as argparse's usage errors
EXIT_DATA = 3
EXIT_TRACKING = 4


class DataError(Exception):
    """Input files that cannot be used (a list file's bad line, an image it names that is missing);
    the message names the file."""


class TrackingServerError(Exception):
    """The MLflow tracking server the run logs to does not answer; the message names its URI."""


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error, not only its line")


def ray_wrapped(exc: BaseException) -> list[BaseException]:
    """The exceptions a Ray wrapper carries (a worker group's, by rank), or [] for any other exception."""
    if "ray" not in sys.modules:  # nothing raised here came through Ray
        return []
    from ray.exceptions import RayTaskError  # noqa: PLC0415
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError  # noqa: PLC0415

    if isinstance(exc, WorkerGroupError):
        return [exc.worker_failures[rank] for rank in sorted(exc.worker_failures)]
    if isinstance(exc, ControllerError):
        return [exc.controller_failure]
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        return [exc.cause]
    return []


def root_cause(exc: BaseException) -> BaseException:
    """`exc` unwrapped from Ray's wrappers. Of several workers' errors, the first of a known kind wins:
    the other ranks often fail only because that one stopped."""
    inner = ray_wrapped(exc)
    if not inner:
        return exc
    causes = [root_cause(e) for e in inner]
    return next((c for c in causes if exit_code_of(c) is not None), causes[0])


def data_error_types() -> tuple[type[BaseException], ...]:
    from .shards import BadSampleError, CorruptShardError, IndexFormatError, ShardWriteError  # noqa: PLC0415

    return DataError, FileNotFoundError, CorruptShardError, IndexFormatError, BadSampleError, ShardWriteError


def exit_code_of(exc: BaseException) -> int | None:
    """The exit status of `exc` itself (not unwrapped), or None when it is of no known kind."""
    if isinstance(exc, (ConfigError, ValidationError, FileExistsError)):
        return EXIT_CONFIG
    if isinstance(exc, TrackingServerError):
        return EXIT_TRACKING
    if isinstance(exc, data_error_types()):
        return EXIT_DATA
    return None


def exit_code_for(exc: BaseException) -> int | None:
    """The exit status of `exc`, unwrapped from Ray's wrappers; None when it is a bug."""
    return exit_code_of(root_cause(exc))


def error_line(exc: BaseException) -> str:
    """The one line that reports `exc` (already unwrapped)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    if any(line.startswith("Original Traceback") for line in lines):
        # A DataLoader worker's exception, re-raised with the worker's traceback as its message: its
        # last line is "<module>.<Class>: <message>".
        return lines[-1].split(": ", 1)[-1]
    head, *rest = lines  # e.g. "invalid config:" and one line per field
    return f"{head} {'; '.join(rest)}" if rest else head


def report_errors(prog: str, debug: bool, command: Callable[..., int], *args) -> int:
    """`command(*args)`; an error of a known kind ends it with one line on stderr (after the traceback
    when `debug`) and returns its exit status. Errors of no known kind propagate."""
    try:
        return command(*args)
    except Exception as exc:
        cause = root_cause(exc)
        code = exit_code_of(cause)
        if code is None:
            raise
        if debug:
            traceback.print_exception(exc)
        print(f"{prog}: {error_line(cause)}", file=sys.stderr)
        return code
