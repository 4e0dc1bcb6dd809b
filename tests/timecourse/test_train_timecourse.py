"""The model and training on time-course tokens (``<CLS> current <SEP> previous``)."""

from __future__ import annotations

import numpy as np
import torch
from timecourse_helpers import SMALL

from cellformer.config import ModelConfig
from cellformer.model import CellTransformer
from cellformer.tokenize.base import CLS, N_SPECIAL, SEP


def test_segment_embedding_tells_a_gene_now_from_the_same_gene_before():
    gene = N_SPECIAL + 3
    ids = torch.tensor([[CLS, gene, SEP, gene]])
    for segments, same in ((False, True), (True, False)):
        torch.manual_seed(0)
        config = ModelConfig(
            n_layers=1, d_model=16, n_heads=2, vocab_size=20, n_classes=2, segment_embedding=segments
        )
        model = CellTransformer(config).eval()
        with torch.no_grad():
            states = model.encode(ids)  # (1, 4, 16)
        assert torch.allclose(states[0, 1], states[0, 3]) == same


def test_training_on_derived_previous_profiles(cli, course_path, tmp_path):
    import cellformer
    from cellformer.data.prepared import PreparedData

    code, err = cli(
        "prepare",
        course_path,
        "--out",
        tmp_path / "p",
        "--label-key",
        "cell_type",
        *SMALL,
        "--time-key",
        "time",
    )
    assert code == 0, err
    prepared = PreparedData(tmp_path / "p")
    run = cellformer.train(
        tmp_path / "p",
        out=tmp_path / "run",
        max_epochs=1,
        n_layers=1,
        d_model=16,
        n_heads=2,
        max_length=int(prepared.meta["max_length"]),
        progress_bar=False,
    )
    model = cellformer.load(run)
    assert model.model_config.segment_embedding is True
    assert (run / "tokenizer" / "previous" / "mapping.json").exists()  # the run directory carries the mapping
    out = model.predict_split(prepared, "test")
    assert out.logits.shape == (len(prepared.split_rows("test")), prepared.n_classes)
    assert np.isfinite(out.logits).all()
