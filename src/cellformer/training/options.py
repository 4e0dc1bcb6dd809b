"""Turn a YAML file / preset name / dict plus ``key=value`` overrides into ModelConfig and TrainConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cellformer.config import ModelConfig, TrainConfig
from cellformer.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
SECTIONS = {"model": ModelConfig, "train": TrainConfig}
# Keys that may differ when a run is resumed: where it runs, not what it computes.
EXECUTION_KEYS = frozenset(
    {
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
        "precision",
        "num_workers",
        "progress_bar",
        "wandb",
        "wandb_project",
        "wandb_mode",
    }
)


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_config_source(config: str | Path | dict[str, Any] | None) -> dict[str, Any]:
    """A config given as a YAML path, a preset name (``reference_gpu``) or a dict; ``None`` is empty."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if not path.exists():
        preset = PRESETS_DIR / f"{config}.yaml"
        if not preset.exists():
            raise ConfigError(
                f"config file {path} does not exist and is not a preset; presets: {', '.join(presets())}"
            )
        path = preset
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping (model: ..., train: ...), not {type(values).__name__}"
        )
    return values


def split_keys(values: dict[str, Any], source: str = "overrides") -> dict[str, dict[str, Any]]:
    """Sort ``values`` into model and train sections; flat keys go to the class that has the field."""
    out: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section {key!r} must be a mapping")
            out[key].update(value)
            continue
        owners = [name for name, cls in SECTIONS.items() if key in cls.field_names()]
        if not owners:
            valid = [f"model.{k}" for k in ModelConfig.field_names()] + [
                f"train.{k}" for k in TrainConfig.field_names()
            ]
            raise ConfigError(f"{source}: unknown config key {key!r}; valid keys are: {', '.join(valid)}")
        out[owners[0]][key] = value
    return out


def resolve(
    config: str | Path | dict[str, Any] | None = None, overrides: dict[str, Any] | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """Defaults, then the config file / preset, then the overrides (later wins)."""
    base = split_keys(read_config_source(config), source=f"config {config}")
    extra = split_keys(overrides or {})
    model = ModelConfig.from_dict({**base["model"], **extra["model"]})
    train = TrainConfig.from_dict({**base["train"], **extra["train"]})
    return model, train


def parse_value(text: str) -> Any:
    """A command-line value: int, float, true/false, none/null, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def resume_differences(stored: dict[str, dict[str, Any]], requested: dict[str, dict[str, Any]]) -> list[str]:
    """Keys whose requested value differs from the stored run (execution keys excepted)."""
    diffs = []
    for section in SECTIONS:
        for key, value in requested[section].items():
            if key in EXECUTION_KEYS or stored[section].get(key) == value:
                continue
            diffs.append(f"{section}.{key}: run has {stored[section].get(key)!r}, asked {value!r}")
    return diffs
