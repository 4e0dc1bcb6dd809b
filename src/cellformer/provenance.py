"""What a run needs to be reproduced: package versions, input fingerprints, time stamps."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path

_PACKAGES = (
    "cellformer",
    "torch",
    "lightning",
    "anndata",
    "scanpy",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "h5py",
    "safetensors",
)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that affect results (``"not installed"`` if absent)."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_fingerprint(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def cellformer_version() -> str:
    try:
        return metadata.version("cellformer")
    except metadata.PackageNotFoundError:
        return "0+unknown"
