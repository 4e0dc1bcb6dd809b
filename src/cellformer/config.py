"""Frozen, validated configuration dataclasses, serialisable to and from plain dicts (JSON/YAML)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from cellformer.errors import ConfigError

T = TypeVar("T", bound="_Config")


@dataclasses.dataclass(frozen=True)
class _Config:
    """Shared helpers: ``to_dict``, ``from_dict`` (unknown keys are refused, listing valid ones)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any]) -> T:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} key(s) {', '.join(unknown)}; "
                f"valid keys are: {', '.join(cls.field_names())}"
            )
        return cls(**values)

    def replace(self: T, **changes: Any) -> T:
        return cls_replace(self, changes)


def cls_replace(config: T, changes: dict[str, Any]) -> T:
    return type(config).from_dict({**config.to_dict(), **changes})


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class PrepareConfig(_Config):
    """Everything ``cellformer prepare`` does to turn an h5ad into a token store."""

    label_key: str = "cell_type"
    layer: str | None = None
    gene_key: str | None = None
    input_normalized: bool = False
    tokenizer: str = "rank"
    max_genes: int = 2048
    previous_layer: str | None = None
    # QC
    min_genes: int = 200
    min_cells: int = 3
    max_mito_fraction: float | None = 0.2
    doublets: bool = False
    # splits
    seed: int = 0
    train_fraction: float = 0.70
    val_fraction: float = 0.15
    test_val_fraction: float = 0.60
    min_gene_overlap: float = 0.5
    # execution
    chunk_size: int = 2048
    workers: int = 1

    def __post_init__(self) -> None:
        _require(self.max_genes > 0, f"max_genes must be positive, got {self.max_genes}")
        _require(self.min_genes >= 0 and self.min_cells >= 0, "min_genes and min_cells must be >= 0")
        _require(
            self.max_mito_fraction is None or 0 < self.max_mito_fraction <= 1,
            f"max_mito_fraction must be in (0, 1], got {self.max_mito_fraction}",
        )
        _require(
            0 < self.train_fraction < 1 and 0 <= self.val_fraction < 1
            and self.train_fraction + self.val_fraction < 1,
            "train_fraction and val_fraction must be in (0, 1) and sum to less than 1 (the rest is test)",
        )
        _require(0 < self.test_val_fraction < 1, "test_val_fraction must be in (0, 1)")
        _require(0 <= self.min_gene_overlap <= 1, "min_gene_overlap must be in [0, 1]")
        _require(self.chunk_size > 0 and self.workers > 0, "chunk_size and workers must be positive")
