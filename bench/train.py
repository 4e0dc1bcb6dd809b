"""Training speed, peak memory and validation macro-F1: the reference setup against ours, same run.

Both sides train the same model size (the reference: 3 layers, d_model 128, 3 heads of width 32,
classifier MLP hidden 64, dropout 0.05) on the same prepared real data (rank tokens, top 2048 genes
of ``--data``, the prepared 70/15/15 split), each in its own child process so peak memory (RSS on
CPU; ``torch.cuda.max_memory_allocated`` on GPU) is its own.

* **reference**: batch size 1; every cell exactly 2049 tokens: ``<CLS>``, its expressed genes in
  rank order, then genes it does not express (in vocabulary order) up to 2048 genes; no mask.
  Plain PyTorch loop, AdamW. Its training speed is timed over ``--ref-steps`` steps (after 3
  warm-up steps), not whole epochs, so it finishes on a CPU.
* **ours**: length-bucketed batches of ``--batch-size`` cells, dynamic padding with a key-padding
  mask, contexts cut at ``--max-length`` tokens (each cell's top-ranked genes). Speed: one timed
  epoch over all training cells through our data path (TokenDataset, LengthBucketSampler,
  collate_tokens) in a plain loop, after one warm-up batch. Quality: ``cellformer.train`` as users
  run it (warm-up + cosine, class weights).

Quality: both train ``--epochs`` full epochs over the same ``--train-cells`` training cells (all by
default; a stratified subset makes the reference affordable on a CPU), then report validation
macro-F1 on the full validation split. ``--skip-ref-quality`` times the reference only.

Usage: ``python bench/train.py [--epochs 2] [--train-cells 300] [--ref-steps 30] [--device cpu|cuda]``
The speed ratio (ours / reference cells/s) is printed last.
"""

from __future__ import annotations

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path

import numpy as np  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mouse_bladder_2100.h5ad"
REFERENCE_MODEL = dict(  # one transformer (members=1), as the reference trains: not the default ensemble
    n_layers=3, d_model=128, n_heads=3, head_dim=32, ff_hidden=128, head_hidden=64, dropout=0.05, members=1
)
REF_LENGTH = 2049


def _train_rows(prepared, n_cells: int | None, seed: int = 0) -> np.ndarray:
    """All training rows, or a stratified subset of ``n_cells`` (at least one per class)."""
    rows = prepared.splits["train"]
    if not n_cells or n_cells >= len(rows):
        return rows
    labels = np.asarray(prepared.labels)[rows]
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = rows[labels == label]
        k = max(1, round(n_cells * len(members) / len(rows)))
        keep.append(rng.choice(members, size=min(k, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fixed_length_cell(store, row: int, vocab_size: int) -> np.ndarray:
    """<CLS> + expressed genes (rank order) + unexpressed genes (vocabulary order) = 2049 tokens."""
    ids, _ = store.cell(row)
    ids = ids[:REF_LENGTH]
    missing = REF_LENGTH - len(ids)
    if missing > 0:
        present = np.zeros(vocab_size, bool)
        present[ids] = True
        present[:4] = True  # special tokens
        filler = np.flatnonzero(~present)[:missing]
        ids = np.concatenate([ids, filler])
    return ids.astype(np.int64)


def _macro_f1(logits: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, logits.argmax(1), average="macro"))


def child_reference(args) -> dict:
    import torch
    import torch.nn.functional as F

    from cellformer.config import ModelConfig
    from cellformer.model import CellTransformer
    from cellformer.preparation.prepared import PreparedData

    torch.manual_seed(0)
    device = torch.device(args.device)
    prepared = PreparedData(args.prepared)
    labels = np.asarray(prepared.labels)
    config = ModelConfig(
        **REFERENCE_MODEL, max_length=REF_LENGTH, vocab_size=prepared.vocab_size, n_classes=prepared.n_classes
    )
    model = CellTransformer(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.ref_lr)
    rows = _train_rows(prepared, args.train_cells)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(row: int) -> None:
        ids = torch.from_numpy(_fixed_length_cell(prepared.store, int(row), prepared.vocab_size))[None].to(
            device
        )
        label = torch.tensor([labels[row]], device=device)
        with autocast:
            logits, _ = model(ids)  # no padding, no mask: (1, n_classes)
        loss = F.cross_entropy(logits.float(), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    rng = np.random.default_rng(0)
    order = rng.permutation(rows)
    for row in order[:3]:  # warm-up
        step(row)
    sync()
    n = min(args.ref_steps, len(order))
    start = time.perf_counter()
    for row in order[3 : 3 + n]:
        step(row)
    sync()
    seconds = time.perf_counter() - start
    result = {"cells_per_s": n / seconds, "timed_steps": n, "tokens_per_cell": REF_LENGTH}

    if not args.skip_ref_quality:
        torch.manual_seed(0)
        model = CellTransformer(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.ref_lr)
        model.train()
        for epoch in range(args.epochs):
            for row in np.random.default_rng(epoch).permutation(rows):
                step(row)
        model.eval()
        val = prepared.splits["val"]
        val = val[labels[val] < prepared.n_classes]
        logits = []
        with torch.no_grad():
            for chunk in np.array_split(val, max(1, len(val) // 16)):
                ids = np.stack(
                    [_fixed_length_cell(prepared.store, int(r), prepared.vocab_size) for r in chunk]
                )
                with autocast:
                    logits.append(model(torch.from_numpy(ids).to(device))[0].float().cpu().numpy())
        result["val_macro_f1"] = _macro_f1(np.concatenate(logits), labels[val])
    result["peak_memory_mb"] = _peak_memory_mb(device)
    return result


def child_ours(args) -> dict:
    import csv
    import shutil

    import torch

    import cellformer
    from cellformer.preparation.prepared import PreparedData

    device = torch.device(args.device)
    prepared_dir = Path(args.prepared)
    prepared = PreparedData(prepared_dir)
    rows = _train_rows(prepared, args.train_cells)
    if len(rows) < len(prepared.splits["train"]):  # train on the same subset as the reference
        subset = Path(args.workdir) / "prepared-subset"
        if not subset.exists():
            shutil.copytree(prepared_dir, subset)
            splits = dict(prepared.splits)
            np.savez(subset / "splits.npz", **{**splits, "train": rows})
        prepared_dir = subset
    speed = _time_our_epoch(prepared, args, device)
    out = Path(args.workdir) / "ours-run"
    shutil.rmtree(out, ignore_errors=True)
    cellformer.train(
        prepared_dir,
        out=out,
        **REFERENCE_MODEL,
        max_length=args.max_length,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        patience=0,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        progress_bar=False,
    )
    with open(out / "log.csv") as handle:
        log = list(csv.DictReader(handle))
    return {
        **speed,
        "val_macro_f1": float(log[-1]["val_macro_f1"]),
        "peak_memory_mb": _peak_memory_mb(device),
    }


def _time_our_epoch(prepared, args, device) -> dict:
    """One timed training epoch over all training cells with our data path (plain loop, same model)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from cellformer.config import ModelConfig
    from cellformer.data.dataset import LengthBucketSampler, TokenDataset, collate_tokens
    from cellformer.model import CellTransformer

    torch.manual_seed(0)
    config = ModelConfig(
        **REFERENCE_MODEL,
        max_length=args.max_length,
        vocab_size=prepared.vocab_size,
        n_classes=prepared.n_classes,
    )
    model = CellTransformer(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dataset = TokenDataset(
        prepared.store, prepared.splits["train"], np.asarray(prepared.labels), args.max_length
    )
    loader = DataLoader(
        dataset,
        batch_sampler=LengthBucketSampler(dataset.lengths(), args.batch_size, seed=0),
        collate_fn=collate_tokens,
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(batch) -> None:
        with autocast:
            logits, _ = model(batch["ids"].to(device), batch["padding_mask"].to(device))
        loss = F.cross_entropy(logits.float(), batch["label"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    batches = list(loader)
    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = int((~torch.cat([b["padding_mask"].flatten() for b in batches])).sum())
    return {
        "cells_per_s": len(dataset) / seconds,
        "tokens_per_s": tokens / seconds,
        "tokens_per_cell": tokens / len(dataset),
        "timed_cells": len(dataset),
    }


def _run_child(name: str, argv: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", name, *argv], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-cells", type=int, default=0, help="stratified training subset (0: all)")
    parser.add_argument("--ref-steps", type=int, default=30, help="reference steps timed (batch size 1)")
    parser.add_argument("--ref-lr", type=float, default=1e-4)
    parser.add_argument("--skip-ref-quality", action="store_true")
    parser.add_argument("--max-length", type=int, default=256, help="our context length (tokens incl. <CLS>)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per process (0: torch's default)"
    )
    parser.add_argument("--child")
    parser.add_argument("--prepared")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        result = (child_reference if args.child == "reference" else child_ours)(args)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        import cellformer

        prepared = Path(tmp) / "prepared"
        start = time.perf_counter()
        cellformer.prepare(args.data, out=prepared, max_genes=2048)
        print(f"prepared {args.data} (rank, top 2048 genes) in {time.perf_counter() - start:.1f} s")
        common = [
            "--prepared",
            str(prepared),
            "--workdir",
            tmp,
            "--epochs",
            str(args.epochs),
            "--train-cells",
            str(args.train_cells),
            "--ref-steps",
            str(args.ref_steps),
            "--ref-lr",
            str(args.ref_lr),
            "--max-length",
            str(args.max_length),
            "--batch-size",
            str(args.batch_size),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
        ] + (["--skip-ref-quality"] if args.skip_ref_quality else [])
        ours = _run_child("ours", common)
        reference = _run_child("reference", common)

    device = args.device
    print(
        f"device: {device} (threads per process: {args.threads or 'torch default'}); model: {REFERENCE_MODEL}; {args.epochs} epoch(s) on "
        f"{args.train_cells or 'all'} training cells; val macro-F1 on the whole validation split"
    )
    print(
        f"reference: batch 1, {REF_LENGTH} tokens/cell incl. unexpressed genes, no mask; speed over "
        f"{reference['timed_steps']} timed steps"
    )
    print(
        f"  cells/s {reference['cells_per_s']:.2f}  tokens/s {reference['cells_per_s'] * REF_LENGTH:,.0f}  "
        f"peak memory {reference['peak_memory_mb']:.0f} MB  "
        f"val macro-F1 {reference.get('val_macro_f1', float('nan')):.3f}"
    )
    print(
        f"ours: batch {args.batch_size}, length-bucketed + masked, max_length {args.max_length} "
        f"(mean {ours['tokens_per_cell']:.0f} real tokens/cell); speed over one epoch of all "
        f"{ours['timed_cells']} training cells (plain loop, our data path); F1 from `cellformer.train`"
    )
    print(
        f"  cells/s {ours['cells_per_s']:.2f}  tokens/s {ours['tokens_per_s']:,.0f}  "
        f"peak memory {ours['peak_memory_mb']:.0f} MB  val macro-F1 {ours['val_macro_f1']:.3f}"
    )
    if "val_macro_f1" in reference:
        print(f"val macro-F1 ours - reference: {ours['val_macro_f1'] - reference['val_macro_f1']:+.3f}")
    print(f"speed ratio (ours / reference cells/s): {ours['cells_per_s'] / reference['cells_per_s']:.1f}x")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
