"""What ``predict`` and ``predict_file`` check and set up before reading cells: the run (loaded, its
stored calibration), the options, and where a transformer's forward pass runs (devices, processes)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellformer.calibration.unknown import UnknownDetector
from cellformer.errors import ConfigError
from cellformer.text import plural

if TYPE_CHECKING:
    from cellformer.runs import TrainedModel
    from cellformer.training.multi_device import DevicePredictor

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 20_000  # cells read, tokenized and predicted at a time; per-cell results are kept
INPUT_TRANSFORMS = ("auto", "log1p", "none")  # as prepare's --input-transform
ACCELERATORS = ("cpu", "gpu", "auto")  # where a transformer's forward pass runs (Lightning's names)


def setup_run(
    run_dir: str | Path,
    *,
    batch_size: int,
    key_added: str,
    chunk_size: int,
    unknown_quantile: float,
    source: str | Path | None,
    accelerator: str = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    **given: Any,
) -> tuple[TrainedModel, UnknownDetector, dict[str, Any], DevicePredictor | None]:
    """Check the options, load the run and its calibration; ``options`` for reading the input, and the
    predictor running the forward pass in several processes (``None``: in this one)."""
    from cellformer.calibration.run import stored_calibration
    from cellformer.runs import load

    processes = check_devices(accelerator, devices, num_nodes)
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ConfigError(f"chunk_size must be a positive number of cells, got {chunk_size!r}")
    check_key_added(key_added)
    min_gene_overlap = given.get("min_gene_overlap")
    if min_gene_overlap is not None and not 0.0 < min_gene_overlap <= 1.0:
        raise ConfigError(f"min_gene_overlap must be a fraction in (0, 1], got {min_gene_overlap}")
    if not 0.0 < unknown_quantile <= 1.0:
        raise ConfigError(f"unknown_quantile must be in (0, 1], got {unknown_quantile}")
    input_transform = given.get("input_transform")
    if input_transform is not None and input_transform not in INPUT_TRANSFORMS:
        raise ConfigError(f"input_transform must be auto, log1p or none, got {input_transform!r}")
    if input_transform is not None and not given.get("input_normalized"):
        raise ConfigError(
            f"input_transform={input_transform!r} describes normalized values: add input_normalized=True "
            "(raw counts are always used as they are)"
        )
    model = load(run_dir)
    predictor = _place(model, accelerator, devices, num_nodes, processes, batch_size)
    detector = stored_calibration(model)
    try:
        detector = detector.with_quantile(unknown_quantile)
    except ValueError as exc:
        raise ConfigError(
            f"cannot use unknown_quantile {unknown_quantile} with run {run_dir}: {exc} "
            f"({detector.quantile}); train it again to choose another"
        ) from None
    names = {"min_gene_overlap": "min_overlap"}
    options = {names.get(k, k): v for k, v in given.items() if v is not None}
    if source is not None:
        options["where"] = str(source)
    return model, detector, options, predictor


def check_devices(accelerator: str, devices: int, num_nodes: int) -> int:
    """Refuse devices prediction cannot run on (in one line); returns the number of processes."""
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"--accelerator {accelerator} (accelerator= in Python) must be cpu, gpu or auto")
    for flag, name, what, value in (
        ("--devices", "devices", "processes per node", devices),
        ("--num-nodes", "num_nodes", "nodes", num_nodes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"{flag} {value} ({name}= in Python) must be a positive number of {what}; 1 is the default"
            )
    if accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"--accelerator gpu needs a CUDA GPU, but torch {torch.__version__} sees none on this "
                "machine; pass --accelerator cpu (or auto: a GPU where there is one) or run on a GPU machine"
            )
        visible = torch.cuda.device_count()
        if devices > visible:
            raise ConfigError(
                f"--devices {devices} with --accelerator gpu, but only {plural(visible, 'CUDA GPU')} "
                f"{'is' if visible == 1 else 'are'} visible on this machine; pass at most that many "
                "--devices (per node)"
            )
    return devices * num_nodes


def _place(
    model: TrainedModel, accelerator: str, devices: int, num_nodes: int, processes: int, batch_size: int
) -> DevicePredictor | None:
    """Put a transformer on its device (one process), or set up the processes that share its forward
    pass (several). A baseline predicts in this process, on the CPU."""
    if model.is_baseline:
        if processes > 1:
            raise ConfigError(
                f"run {model.run_dir} is a {model.kind} baseline: it has no neural forward pass to spread "
                "over devices and predicts in one process on the CPU; drop --devices / --num-nodes "
                "(devices= / num_nodes=), or use --shard K/N to split a large file into jobs"
            )
        if accelerator == "gpu":
            logger.info("a %s run predicts on the CPU: --accelerator gpu does not change it", model.kind)
        return None
    if processes == 1:
        import torch

        model.use_device({"cpu": torch.device("cpu"), "gpu": torch.device("cuda")}.get(accelerator))
        return None
    from cellformer.training.multi_device import DevicePredictor

    return DevicePredictor(
        model.model,
        Path(model.run_dir),
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        batch_size=batch_size,
    )


def check_key_added(key_added: str) -> None:
    """Refuse a ``key_added`` that cannot name AnnData keys in an ``.h5ad`` (empty, or with ``/``)."""
    if not isinstance(key_added, str) or not key_added.strip() or "/" in key_added:
        raise ConfigError(
            f"--key-added {key_added!r} (key_added= in Python) cannot prefix AnnData keys: give a non-empty name "
            "without '/' (h5ad stores keys as HDF5 paths), e.g. cellformer or cellformer_v2"
        )
