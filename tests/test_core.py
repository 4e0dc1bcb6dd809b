"""The shared plumbing: atomic writes, provenance, config validation, the CLI entry point."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from cellformer.atomic import atomic_directory, atomic_path, read_json, write_json
from cellformer.config import PrepareConfig
from cellformer.errors import ConfigError
from cellformer.provenance import file_fingerprint, package_versions


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_appears_only_when_complete(tmp_path):
    target = tmp_path / "prepared"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("x")
            raise RuntimeError("crash")
    assert not target.exists()
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("x")
    assert (target / "a.txt").read_text() == "x"
    with pytest.raises(FileExistsError):
        with atomic_directory(target) as tmp:
            (tmp / "b.txt").write_text("y")
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_write_json_round_trips_numpy_values(tmp_path):
    import numpy as np

    write_json(tmp_path / "x.json", {"a": np.int64(3), "b": np.float32(0.5), "c": np.arange(3)})
    assert read_json(tmp_path / "x.json") == {"a": 3, "b": 0.5, "c": [0, 1, 2]}


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    first = file_fingerprint(path)
    assert first == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    path.write_bytes(b"abd")
    assert file_fingerprint(path) != first


def test_package_versions_names_the_stack():
    versions = package_versions()
    for name in ("python", "torch", "numpy", "anndata", "scanpy"):
        assert versions[name] and versions[name] != "not installed"


def test_config_refuses_unknown_keys_and_lists_valid_ones():
    with pytest.raises(ConfigError, match="max_genez.*valid keys are:.*max_genes"):
        PrepareConfig.from_dict({"max_genez": 5})
    with pytest.raises(ConfigError, match="max_genes must be positive"):
        PrepareConfig(max_genes=0)
    config = PrepareConfig(max_genes=64)
    assert PrepareConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_genes": "64"}, "PrepareConfig.max_genes must be int, got '64'"),
        ({"seed": "x"}, "PrepareConfig.seed must be int, got 'x'"),
        ({"doublets": 1}, "PrepareConfig.doublets must be bool"),
        ({"context_keys": ["assay", 3]}, "PrepareConfig.context_keys must be a list of str"),
    ],
)
def test_prepare_config_checks_types_like_the_other_configs(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        PrepareConfig(**values)
    assert PrepareConfig(train_fraction=0.5, context_keys=["assay"]).context_keys == ("assay",)


def test_every_prepare_option_has_its_help_on_the_field_and_in_help():
    """The help text is declared once, on the PrepareConfig field, and ``cellformer prepare --help`` shows it."""
    from cellformer.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["prepare"]
    by_dest = {action.dest: action for action in sub._actions}
    for name in PrepareConfig.field_names():
        assert PrepareConfig.help(name), name
        assert by_dest[name].help.startswith(PrepareConfig.help(name).replace("%", "%%")), name


def test_cli_help_is_light():
    """`cellformer --help` must not import torch (instant start-up)."""
    code = (
        "import sys; from cellformer.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
