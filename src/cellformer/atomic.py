"""Atomic writes: outputs appear complete or not at all (temp path + rename).

Outputs get the usual permissions of the process's umask (``0644`` files and ``0755`` folders under
umask ``0022``), whatever mode the library that wrote the temporary file chose (safetensors writes
``0600``), so a run directory shared with colleagues can be read by them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal_mode(path: Path) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have (``0o666``/``0o777`` minus the umask)."""
    base = 0o777 if path.is_dir() else 0o666
    with contextlib.suppress(OSError):
        os.chmod(path, base & ~_umask())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_siblings(path: str | os.PathLike) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` / ``.NAME.old-PID`` leftovers of ``path`` whose process is gone.

    A process killed while writing ``path`` (SIGKILL, power loss) leaves them behind; they are never
    complete outputs. Returns the paths removed (each is logged).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:tmp|old)-(\d+)$")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        log.info("removed %s, left behind by an interrupted earlier run (process %s)", entry, match.group(1))
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    Leftover ``.NAME.tmp-PID`` files of processes no longer running are removed first.
    """
    path = Path(path)
    remove_stale_siblings(path)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        _normal_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it to ``path`` when the block succeeds.

    An interrupted run leaves only a hidden ``.NAME.tmp-PID`` folder, never a half-written ``path``;
    such leftovers of processes no longer running are removed when the next write of ``path`` starts.
    With ``overwrite``, an existing ``path`` is replaced only after the new one is complete.
    """
    path = Path(path)
    remove_stale_siblings(path)
    tmp = _tmp_sibling(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _normal_mode(tmp)
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_writable(path: str | os.PathLike) -> None:
    """Fail at once if ``path`` (a file or directory to write) cannot be created where it is to go.

    Creates and removes an empty probe file in the nearest existing folder above ``path`` (nothing
    else is created); raises the ``OSError`` (permission denied, read-only, disk full) naming ``path``.
    """
    import tempfile

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=folder)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    os.close(fd)
    os.unlink(probe)
