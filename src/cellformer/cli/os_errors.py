"""One line for an operating-system failure (disk full, permission denied, read-only location).

The library writes every output atomically (a hidden ``.NAME.tmp-PID`` sibling renamed into place), so
when a write fails the temporary file is already gone; this module only names the user's path (not the
temporary one) and says what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

_TMP = re.compile(r"(^|/)\.([^/]+)\.(?:tmp|old)-\d+(?=/|$)")  # /dir/.out.tmp-123/x -> /dir/out/x
_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)")  # h5py / HDF5 messages carry the errno in their text
_FILENAME_IN_TEXT = re.compile(r"(?:file ?name|filename)\s*=\s*'([^']+)'")

# what happened; what to do with an --out option; what to do without one (evaluate writes into RUN_DIR)
_KINDS = {
    errno.ENOSPC: (
        "no space left on the device",
        "free some space (or choose an --out on another disk)",
        "free some space",
    ),
    errno.EDQUOT: (
        "disk quota exceeded",
        "free some space (or choose an --out on another disk)",
        "free some space",
    ),
    errno.EROFS: (
        "the location is read-only",
        "choose an --out on a writable disk",
        "the command writes into RUN_DIR: copy the run directory to a writable disk and use the copy",
    ),
    errno.EACCES: (
        "permission denied",
        "choose an --out you can write to, or fix the permissions",
        "the command writes into RUN_DIR: fix its permissions, or copy it somewhere you can write and use "
        "the copy",
    ),
    errno.EPERM: (
        "operation not permitted",
        "choose an --out you can write to, or fix the permissions",
        "the command writes into RUN_DIR: fix its permissions, or copy it somewhere you can write and use "
        "the copy",
    ),
}
_TEXTS = {
    "no space left": errno.ENOSPC,
    "quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
}


_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")  # Rust libraries (safetensors): "... (os error 28)"


def as_os_error(exc: BaseException) -> OSError | None:
    """``exc`` as an OSError: itself, or a library's own error type that wraps one (safetensors)."""
    if isinstance(exc, OSError):
        return exc
    match = _OS_ERROR_IN_TEXT.search(str(exc))
    if match is None:
        return None
    code = int(match.group(1))
    return OSError(code, os.strerror(code))


def user_path(path: str | None) -> str | None:
    """The path a user knows: ``.NAME.tmp-PID`` / ``.NAME.old-PID`` parts read as ``NAME``."""
    if not path:
        return None
    return _TMP.sub(lambda m: m.group(1) + m.group(2), str(path))


def error_code(exc: OSError) -> int | None:
    """The errno of ``exc``, also when a library only put it in the message (h5py, HDF5)."""
    if exc.errno in _KINDS:
        return exc.errno
    text = str(exc).lower()
    match = _ERRNO_IN_TEXT.search(text)
    if match and int(match.group(1)) in _KINDS:
        return int(match.group(1))
    for phrase, code in _TEXTS.items():
        if phrase in text:
            return code
    return exc.errno


def _outputs(args: argparse.Namespace) -> list[str]:
    return [str(p) for p in (getattr(args, "out", None), getattr(args, "run_dir", None)) if p]


def _is_output(path: str, outputs: list[str]) -> bool:
    target = Path(path).resolve()
    for output in outputs:
        out = Path(output).resolve()
        if target == out or target.is_relative_to(out):
            return True
    return False


def os_error_line(exc: OSError, args: argparse.Namespace, hint: str | None = None) -> str:
    """``cannot write PATH: no space left on the device; free some space ... and run the command again``."""
    outputs = _outputs(args)
    if isinstance(exc, FileExistsError) and exc.errno is None and exc.args:  # atomic_directory's rename
        replace = " or pass --overwrite" if hasattr(args, "overwrite") else ""
        return (
            f"cannot write {user_path(str(exc.args[0]))}: it was created by another process meanwhile; "
            f"choose another --out{replace}"
        )
    # a copy or rename names its destination second: that is the file being written
    filename = exc.filename2 or exc.filename
    filename = filename or (m.group(1) if (m := _FILENAME_IN_TEXT.search(str(exc))) else None)
    path = user_path(filename) or (outputs[0] if outputs else None)
    code = error_code(exc)
    writing = path is None or not Path(path).exists() or _is_output(path, outputs)
    if code in _KINDS:
        what, with_out, without_out = _KINDS[code]
        todo = with_out if getattr(args, "out", None) else without_out
        if not writing:
            todo = "check that you can read it"
    else:
        what = exc.strerror or str(exc) or type(exc).__name__
        todo = "check the path"
    verb = "cannot write" if writing else "cannot read"
    where = f"{verb} {path}" if path else verb
    again = hint or "run the command again"
    return f"{where}: {what}; {todo}, then {again}"


@contextlib.contextmanager
def quiet_failed_write_cleanup() -> Iterator[None]:
    """After a failed h5py write (disk full), h5py's object destructors report the same HDF5 failure
    again, as tracebacks (Cython prints them through ``sys.excepthook`` and ``sys.unraisablehook``);
    while the command runs, drop those: it reports the failure once, in its error line."""
    import sys

    def repeated(value: BaseException | None) -> bool:
        return "file write failed" in str(value)  # HDF5's text for a failed write

    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def unraisable_hook(unraisable) -> None:
        if not repeated(unraisable.exc_value):
            previous_unraisable(unraisable)

    def except_hook(kind, value, tb) -> None:
        if not repeated(value):
            previous_except(kind, value, tb)

    sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous_unraisable, previous_except
