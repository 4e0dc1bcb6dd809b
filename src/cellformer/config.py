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

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of field ``name`` (empty when it has none)."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}[name]

    def replace(self: T, **changes: Any) -> T:
        return cls_replace(self, changes)


def cls_replace(config: T, changes: dict[str, Any]) -> T:
    return type(config).from_dict({**config.to_dict(), **changes})


def _field(default: Any, text: str) -> Any:
    """A dataclass field with its help text (``_Config.help``: the CLI's ``--help`` shows it)."""
    return dataclasses.field(default=default, metadata={"help": text})


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclasses.dataclass(frozen=True)
class PrepareConfig(_Config):
    """Everything ``cellformer prepare`` does to turn an h5ad into a token store."""

    label_key: str = _field(
        "cell_type",
        "obs column with the labels; cells whose label is missing (NaN, or the text '', 'nan', 'None', 'NA', "
        "'null') are left out and counted in one line",
    )
    allow_many_classes: bool = _field(
        False,
        "accept a label column with more than 50 classes that are more than 10% of the labelled cells or a "
        "quarter of them single-cell classes (refused by default: such a column, e.g. n_counts, is rarely one "
        "of cell types; cellformer.data.labels)",
    )
    layer: str | None = _field(None, "read this layer instead of X ('raw.X' reads adata.raw.X)")
    gene_key: str | None = _field(None, "var column naming genes (e.g. Ensembl ids) instead of var_names")
    input_normalized: bool = _field(
        False,
        "values are normalized (log1p is detected and undone; FPKM/TPM used as-is); count QC is skipped",
    )
    input_transform: str = _field(
        "auto",
        "with input_normalized (an error without it): how the values are stored; auto detects log1p (values "
        "below 30), log1p undoes it (refused for larger values), none uses them as they are",
    )
    tokenizer: str = _field(
        "hybrid",
        "rank: genes ordered by normalized expression (Geneformer); binned: highly variable genes with value "
        "bins (scGPT); hybrid: ranked genes with value bins (best on validation cells, docs/accuracy.md)",
    )
    max_genes: int = _field(2048, "genes per cell")
    n_hvg: int = _field(
        2000,
        "binned and hybrid: the highly variable genes of the training cells that can become tokens "
        "(all genes when the file has fewer)",
    )
    n_bins: int = _field(51, "binned and hybrid: value bins")
    value_bins: str = _field(
        "cell",
        "hybrid: bin a gene's value by the quantiles of the cell's own values (cell, scGPT) or of that gene's "
        "values in the training cells (gene)",
    )
    previous_layer: str | None = _field(
        None, "time-course variant: layer holding each cell's previous-time-point profile"
    )
    time_key: str | None = _field(
        None,
        "time-course variant: obs column with time points (numbers or ordered categories); each cell's "
        "previous profile is derived from its nearest training cells at the preceding time point",
    )
    batch_key: str | None = _field(
        None, "obs column with the batch: one context token per cell after <CLS>, with its own embedding"
    )
    context_keys: tuple[str, ...] = _field(
        (), "another categorical obs column (assay, modality, ...) as a context token; repeatable"
    )
    min_genes: int | None = _field(
        None,
        "min genes per cell; 0 = off (default: 200 on whole-transcriptome files, 1% of the file's genes on "
        "smaller gene panels, see auto_min_genes)",
    )
    min_cells: int = _field(3, "min cells per gene; 0 = off")
    max_mito_fraction: float | None = _field(
        0.2, "max mitochondrial fraction of a cell's counts, 0-1; 'off' (or 'none') disables"
    )
    doublets: bool = _field(False, "remove doublets found by scrublet")
    seed: int = _field(0, "random seed")
    train_fraction: float = _field(0.70, "without --test: fraction of cells for training")
    val_fraction: float = _field(
        0.15, "without --test: fraction of cells for validation; the rest is the test split"
    )
    test_val_fraction: float = _field(0.60, "with --test: fraction of the test file used for validation")
    min_gene_overlap: float = _field(
        0.5, "with --test: minimum fraction of training genes the test file must have"
    )
    chunk_size: int = _field(2048, "cells read at a time")
    workers: int = _field(1, "tokenizer processes")

    def __post_init__(self) -> None:
        if isinstance(self.context_keys, str):  # one key given as a plain string (YAML, API)
            object.__setattr__(self, "context_keys", (self.context_keys,))
        if isinstance(self.context_keys, list) or self.context_keys is None:  # from the CLI / JSON
            object.__setattr__(self, "context_keys", tuple(self.context_keys or ()))
        _check_types(self)
        _require(self.max_genes > 0, f"max_genes must be positive, got {self.max_genes}")
        _require(
            (self.min_genes is None or self.min_genes >= 0) and self.min_cells >= 0,
            "min_genes and min_cells must be >= 0",
        )
        _require(
            self.max_mito_fraction is None or 0 < self.max_mito_fraction <= 1,
            f"max_mito_fraction must be in (0, 1], got {self.max_mito_fraction}",
        )
        _require(
            0 < self.train_fraction < 1
            and 0 <= self.val_fraction < 1
            and self.train_fraction + self.val_fraction < 1,
            "train_fraction and val_fraction must be in (0, 1) and sum to less than 1 (the rest is test)",
        )
        _require(0 < self.test_val_fraction < 1, "test_val_fraction must be in (0, 1)")
        _require(0 <= self.min_gene_overlap <= 1, "min_gene_overlap must be in [0, 1]")
        _require(self.chunk_size > 0 and self.workers > 0, "chunk_size and workers must be positive")
        _require(
            self.input_transform in ("auto", "log1p", "none"),
            f"input_transform must be auto, log1p or none, got {self.input_transform!r}",
        )
        _require(self.n_hvg > 0 and self.n_bins > 1, "n_hvg must be positive and n_bins at least 2")
        _require(
            self.value_bins in ("cell", "gene"), f"value_bins must be cell or gene, got {self.value_bins!r}"
        )
        _require(
            self.previous_layer is None or self.time_key is None,
            "give either previous_layer or time_key for the previous profile, not both",
        )
        _require(
            self.time_key is None or self.time_key != self.label_key,
            f"label_key and time_key are both {self.label_key!r}: the previous-time-point profile is derived "
            "from the time column (the time point shows in the model's input), so the label would leak; "
            "classify another column or drop time_key (see docs/timecourse.md)",
        )
        _require(bool(self.label_key), "label_key must name an obs column")
        covariates = self.covariate_keys
        _require(
            all(isinstance(key, str) and key for key in covariates),
            f"batch_key and context_keys must name obs columns, got {list(covariates)}",
        )
        _require(
            len(set(covariates)) == len(covariates),
            f"a covariate is given twice in batch_key / context_keys: {', '.join(covariates)}",
        )
        _require(
            self.label_key not in covariates,
            f"label_key {self.label_key!r} is also a context covariate: the label would be part of the input; "
            "drop it from --batch-key / --context-key",
        )

    def min_genes_for(self, n_genes: int) -> int:
        """The ``min_genes`` QC threshold for a file of ``n_genes`` genes (``auto_min_genes`` when None)."""
        return auto_min_genes(n_genes) if self.min_genes is None else self.min_genes

    @property
    def covariate_keys(self) -> tuple[str, ...]:
        """The obs columns that become context tokens, in token order (``batch_key`` first)."""
        return ((self.batch_key,) if self.batch_key else ()) + tuple(self.context_keys)


def auto_min_genes(n_genes: int) -> int:
    """Default ``min_genes``: scanpy's customary 200 of a whole transcriptome (~20,000 genes), scaled
    down on preselected gene panels (1 % of the file's genes, at least 1), which would otherwise lose
    most of their cells (a 2,000-HVG CITE-seq file: 86 % of cells express fewer than 200 of them)."""
    return int(min(200, max(1, round(n_genes / 100))))


def _check_types(config: _Config) -> None:
    """Refuse values of the wrong type (YAML / CLI strings); ints are accepted where floats are expected."""
    import typing

    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if typing.get_origin(hints[field.name]) is tuple:  # tuple[str, ...]: a tuple of strings
            _require(
                isinstance(value, tuple) and all(isinstance(item, str) for item in value),
                f"{type(config).__name__}.{field.name} must be a list of str, got {value!r}",
            )
            continue
        allowed = typing.get_args(hints[field.name]) or (hints[field.name],)
        if value is None and type(None) in allowed:
            continue
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, field.name, float(value))
            continue
        ok = any(
            isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            for kind in allowed
            if kind is not type(None)
        )
        _require(
            ok,
            f"{type(config).__name__}.{field.name} must be "
            f"{' or '.join(getattr(k, '__name__', str(k)) for k in allowed)}, got {value!r}",
        )


POOLINGS = ("cls", "mean")  # ModelConfig.pooling
EMBEDDING_INITS = ("random", "svd")  # TrainConfig.embedding_init


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Config):
    """The transformer encoder and its classifier head (``cellformer.model``).

    Defaults are a small model for a laptop CPU. ``vocab_size``, ``n_classes`` and ``n_values`` are
    taken from the prepared dataset when left as ``None`` and are recorded in the run's config.
    ``n_heads * head_dim`` need not equal ``d_model`` (the reference uses 3 heads of 32 with 128).
    """

    n_layers: int = _field(
        1,
        "transformer blocks (with <CLS> pooling the last block computes only the <CLS> state, so one block "
        "is <CLS> attending over the cell's gene tokens; docs/accuracy.md round 9)",
    )
    d_model: int = _field(64, "width of the token embeddings and of every block")
    n_heads: int = _field(4, "attention heads per block")
    head_dim: int | None = _field(None, "width of each attention head (None: d_model // n_heads)")
    ff_hidden: int | None = _field(None, "feed-forward width in each block (None: 2 * d_model)")
    head_hidden: int = _field(
        64, "hidden width of the one-hidden-layer MLP classifier on the pooled embedding"
    )
    dropout: float = _field(0.1, "dropout on embeddings, attention outputs, feed-forward and the classifier")
    attention_dropout: float | None = _field(
        0.0,
        "dropout on the attention probabilities (None: dropout); off by default: on the CPU its (B, H, T, T) "
        "random mask is most of a training step's cost, and it did not help accuracy (docs/accuracy.md)",
    )
    norm: str = _field("pre", "LayerNorm before (pre) or after (post) attention and feed-forward")
    max_length: int = _field(128, "tokens per cell including <CLS>; longer cells keep their top-ranked genes")
    vocab_size: int | None = _field(None, "from the prepared dataset: special tokens + genes")
    n_classes: int | None = _field(None, "from the prepared dataset")
    n_values: int | None = _field(
        None, "value ids (value-token tokenizers); None: from the data, 0: no value embedding"
    )
    n_context: int | None = _field(
        None,
        "rows of the context-token table (batch, assay, ...; ids from vocab_size on); None: from the "
        "prepared data, 0: none",
    )
    segment_embedding: bool | None = _field(
        None,
        "time course: a learned embedding added to the tokens after <SEP> (the previous-time-point block), "
        "so a gene now and the same gene before differ; None: on when the data has <SEP>",
    )
    pooling: str = _field(
        "cls",
        "what the classifier reads: the final <CLS> state (cls) or the mean of the final states of <CLS> "
        "and every gene token, padding left out (mean)",
    )
    members: int = _field(
        4,
        "independently initialised transformers trained side by side on the same batches, each with its "
        "own gene-dropout draws; the model's probabilities are their mean and its embedding their <CLS> "
        "embeddings side by side (docs/accuracy.md rounds 8-9); 1: a single transformer",
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _require(self.members >= 1, f"model members must be at least 1, got {self.members}")
        _require(
            self.pooling in POOLINGS, f"model pooling must be {' or '.join(POOLINGS)}, got {self.pooling!r}"
        )
        for name in ("n_layers", "d_model", "n_heads", "head_hidden", "max_length"):
            _require(getattr(self, name) > 0, f"model {name} must be positive, got {getattr(self, name)}")
        for name in ("head_dim", "ff_hidden", "vocab_size", "n_classes"):
            value = getattr(self, name)
            _require(value is None or value > 0, f"model {name} must be positive, got {value}")
        _require(
            self.n_values is None or self.n_values >= 0, f"model n_values must be >= 0, got {self.n_values}"
        )
        _require(
            self.n_context is None or self.n_context >= 0,
            f"model n_context must be >= 0, got {self.n_context}",
        )
        _require(0 <= self.dropout < 1, f"model dropout must be in [0, 1), got {self.dropout}")
        _require(
            self.attention_dropout is None or 0 <= self.attention_dropout < 1,
            f"model attention_dropout must be in [0, 1), got {self.attention_dropout}",
        )
        _require(self.norm in ("pre", "post"), f"model norm must be 'pre' or 'post', got {self.norm!r}")
        _require(
            self.max_length >= 2,
            f"model max_length must be at least 2 (<CLS> + one gene), got {self.max_length}",
        )
        if self.head_dim is None:
            _require(
                self.d_model % self.n_heads == 0,
                f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}; set head_dim explicitly",
            )

    @property
    def attention_dropout_p(self) -> float:
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def embedding_width(self) -> int:
        """Width of the cell embedding the model returns: ``d_model`` per member."""
        return self.d_model * self.members

    @property
    def attention_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def ff_width(self) -> int:
        return self.ff_hidden if self.ff_hidden is not None else 2 * self.d_model


MONITORS = ("val_loss", "val_macro_f1")  # TrainConfig.monitor: validation metrics in log.csv
KEEPS = ("best", "last")  # TrainConfig.keep: which weights a run keeps


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Config):
    """Optimisation, stopping, devices and logging for ``cellformer train``."""

    seed: int = _field(0, "seed of everything random in training (same seed, same run)")
    max_epochs: int = _field(
        100,
        "an upper bound: early stopping usually ends training well before it; the cosine schedule spans "
        "all of it (docs/accuracy.md: 30 was too short for small training sets)",
    )
    max_steps: int | None = _field(
        None,
        "an upper bound on optimizer steps (None: max_epochs alone), rounded up to whole epochs: a large "
        "training set trains fewer epochs, and the cosine schedule spans them",
    )
    batch_size: int = _field(32, "cells per optimizer step (per process)")
    lr: float = _field(1e-3, "AdamW learning rate (the peak of the warm-up + cosine schedule)")
    weight_decay: float = _field(0.01, "AdamW weight decay (not on biases and LayerNorms)")
    warmup_fraction: float = _field(0.05, "linear warm-up over this fraction of all steps, then cosine decay")
    min_lr_fraction: float = _field(0.05, "the cosine ends at lr * min_lr_fraction")
    grad_clip: float | None = _field(1.0, "max gradient norm; None: no clipping")
    class_weights: bool = _field(
        True, "cross-entropy weighted by inverse class frequency of the training split"
    )
    class_weight_power: float = _field(
        1.0,
        "with class_weights: the weights are the inverse class frequency to this power (1: inverse "
        "frequency, 0.5: its square root, milder on very rare classes)",
    )
    patience: int = _field(
        20,
        "early stopping on the monitored validation metric (epochs without a better one); 0: never stop early",
    )
    monitor: str = _field(
        "val_macro_f1",
        "validation metric for early stopping and the best checkpoint: val_loss (lowest) or val_macro_f1 "
        "(highest)",
    )
    keep: str = _field(
        "best",
        "which weights the run keeps: best (the epoch with the best --monitor value) or last (the weights "
        "when training ends: the schedule's end, or the early stop)",
    )
    context_dropout: float = _field(
        0.1,
        "probability of replacing each training cell's context token (--batch-key / --context-key) by its "
        "covariate's <UNK>, so cells of batches unseen in training get a trained token",
    )
    gene_dropout: float = _field(
        0.4,
        "probability of dropping each gene token of a training cell in each step (augmentation; 0.4: "
        "docs/accuracy.md round 6)",
    )
    label_smoothing: float = _field(0.1, "cross-entropy label smoothing")
    mixup_alpha: float = _field(
        0.0,
        "token-set mixup: each training cell keeps a Beta(X, X) share of its gene tokens and takes the rest, "
        "with a mixed label, from another cell of the batch (0: off; docs/accuracy.md round 7)",
    )
    consistency_weight: float = _field(
        0.0,
        "two gene-dropout views of each training cell per step, with this weight on the symmetric KL "
        "divergence between their predictions (R-Drop; 0: off; needs gene_dropout; docs/accuracy.md round 8)",
    )
    embedding_init: str = _field(
        "svd",
        "gene embeddings at the start: random, or svd (principal axes of the training cells' tokens; "
        "docs/accuracy.md)",
    )
    embedding_lr_factor: float = _field(
        1.0,
        "the gene embeddings' learning rate as a fraction of lr (0: kept as initialised; 1: trained from "
        "that start like the rest, docs/accuracy.md round 2)",
    )
    masked_gene_weight: float = _field(
        0.0,
        "the masked-gene objective as an auxiliary loss: --masked-gene-fraction of each training cell's "
        "gene tokens become <MASK> and are predicted through the gene table; this times its loss is added "
        "(0: off)",
    )
    masked_gene_fraction: float = _field(
        0.15,
        "share of gene tokens hidden by the masked-gene objective (pretraining and --masked-gene-weight)",
    )
    pretrain_epochs: int = _field(
        0,
        "epochs of masked-gene pretraining of the encoder on the training cells and prepare's --unlabelled "
        "cells, before the classifier is trained (0: none)",
    )
    ema_decay: float = _field(
        0.0,
        "validate, checkpoint and save an exponential moving average of the weights with this per-step "
        "decay (Lightning's EMAWeightAveraging; 0: off)",
    )
    accelerator: str = _field("cpu", "cpu, gpu or auto (Lightning names)")
    devices: int = _field(1, "devices per node (several: Lightning's DDP)")
    num_nodes: int = _field(1, "nodes (a cluster: one scheduler task per device)")
    strategy: str = _field("auto", "Lightning strategy; auto uses DDP when devices * num_nodes > 1")
    precision: str | None = _field(
        None, "Lightning precision; default (None): bf16-mixed on a GPU, 32-true on the CPU"
    )
    num_workers: int = _field(0, "DataLoader worker processes")
    progress_bar: bool = _field(True, "progress bars on stderr")
    wandb: bool = _field(False, "log to Weights & Biases (offline unless --wandb-mode says otherwise)")
    wandb_project: str = _field("cellformer", "Weights & Biases project")
    wandb_mode: str = _field("offline", "Weights & Biases mode: offline, online or disabled")

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("max_epochs", "batch_size", "devices", "num_nodes"):
            _require(getattr(self, name) > 0, f"train {name} must be positive, got {getattr(self, name)}")
        _require(
            self.max_steps is None or self.max_steps > 0,
            f"train max_steps must be positive (or None: no limit), got {self.max_steps}",
        )
        _require(self.lr > 0, f"train lr must be positive, got {self.lr}")
        _require(self.weight_decay >= 0, f"train weight_decay must be >= 0, got {self.weight_decay}")
        _require(
            0 <= self.warmup_fraction < 1,
            f"train warmup_fraction must be in [0, 1), got {self.warmup_fraction}",
        )
        _require(
            0 <= self.min_lr_fraction <= 1,
            f"train min_lr_fraction must be in [0, 1], got {self.min_lr_fraction}",
        )
        _require(
            self.grad_clip is None or self.grad_clip > 0,
            f"train grad_clip must be positive, got {self.grad_clip}",
        )
        _require(
            self.class_weight_power >= 0,
            f"train class_weight_power must be >= 0, got {self.class_weight_power}",
        )
        _require(self.patience >= 0, f"train patience must be >= 0, got {self.patience}")
        _require(
            self.monitor in MONITORS,
            f"train monitor must be {' or '.join(MONITORS)}, got {self.monitor!r}",
        )
        _require(self.keep in KEEPS, f"train keep must be {' or '.join(KEEPS)}, got {self.keep!r}")
        _require(
            0 <= self.context_dropout < 1,
            f"train context_dropout must be in [0, 1) (the probability of replacing a training cell's "
            f"context token by <UNK>), got {self.context_dropout}",
        )
        _require(
            0 <= self.gene_dropout < 1,
            f"train gene_dropout must be in [0, 1) (the probability of dropping each gene token of a "
            f"training cell), got {self.gene_dropout}",
        )
        _require(
            0 <= self.label_smoothing < 1,
            f"train label_smoothing must be in [0, 1), got {self.label_smoothing}",
        )
        _require(
            self.mixup_alpha >= 0,
            f"train mixup_alpha must be >= 0 (0: no mixup), got {self.mixup_alpha}",
        )
        _require(
            self.consistency_weight >= 0 and (self.consistency_weight == 0 or self.gene_dropout > 0),
            f"train consistency_weight must be >= 0, and needs gene_dropout > 0 (the two views are two gene "
            f"dropout draws), got {self.consistency_weight} with gene_dropout {self.gene_dropout}",
        )
        _require(
            self.consistency_weight == 0 or self.masked_gene_weight == 0,
            "train consistency_weight and masked_gene_weight cannot both be on (choose one auxiliary loss)",
        )
        _require(
            self.embedding_init in EMBEDDING_INITS,
            f"train embedding_init must be {' or '.join(EMBEDDING_INITS)}, got {self.embedding_init!r}",
        )
        _require(
            0 <= self.embedding_lr_factor <= 1,
            f"train embedding_lr_factor must be in [0, 1], got {self.embedding_lr_factor}",
        )
        _require(
            self.masked_gene_weight >= 0,
            f"train masked_gene_weight must be >= 0, got {self.masked_gene_weight}",
        )
        _require(
            self.pretrain_epochs >= 0,
            f"train pretrain_epochs must be >= 0 (0: no pretraining), got {self.pretrain_epochs}",
        )
        _require(
            0 < self.masked_gene_fraction < 1,
            f"train masked_gene_fraction must be in (0, 1) (the share of gene tokens hidden), "
            f"got {self.masked_gene_fraction}",
        )
        _require(
            0 <= self.ema_decay < 1,
            f"train ema_decay must be in [0, 1) (0: no weight averaging), got {self.ema_decay}",
        )
        _require(self.num_workers >= 0, f"train num_workers must be >= 0, got {self.num_workers}")
        _require(
            self.wandb_mode in ("offline", "online", "disabled"),
            f"train wandb_mode must be offline, online or disabled, got {self.wandb_mode!r}",
        )


@dataclasses.dataclass(frozen=True)
class RunInput:
    """What a run records of the prepared dataset it was trained on (``config.json["prepared"]``): the
    one reader of that record. ``path`` is a location hint (``None`` when not recorded); ``meta`` is the
    dataset's ``meta.json`` at training time, and ``prepare`` the :class:`PrepareConfig` it was made with.
    """

    path: str | None
    meta: dict[str, Any]
    prepare: PrepareConfig

    @classmethod
    def of(cls, run_config: dict[str, Any]) -> RunInput:
        record = run_config.get("prepared")
        record = record if isinstance(record, dict) else {}
        meta = dict(record.get("meta") or {})
        prepare = PrepareConfig.from_dict(meta["config"]) if meta.get("config") else PrepareConfig()
        return cls(record.get("path"), meta, prepare)

    @property
    def tokenizer(self) -> str:
        return str(self.meta.get("tokenizer", self.prepare.tokenizer))

    @property
    def label_key(self) -> str:
        return str(self.meta.get("label_key", self.prepare.label_key))

    @property
    def created(self) -> str | None:
        return self.meta.get("created")
