"""Residual k-means semantic IDs as a pipeline stage (``python -m gream_lit fit``), beside the RQ-VAE one.

K-means has no gradient steps, so the stage's single training step fits the quantiser on every item
embedding of the datamodule (``ItemEmbeddingDataModule``) and writes the index to ``output_path``,
where a pipeline's next stage picks it up (``artifacts: {index: ...}``). Testing logs the index's
quality report (collision rates, per-level usage and perplexity) under ``index/test/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.indexing.build import BuildConfig, auto_codebook_size, build_index
from gream_lit.indexing.quality_report import index_report

log = logging.getLogger(__name__)


class RQKMeansIndex(L.LightningModule):
    """Fit (balanced) residual k-means once and save the collision-free index.

    Args:
        output_path: where the index json goes (a pipeline points it into the stage directory).
        method, levels, codebook_size, collision, seed, max_iter, tol, n_init, style: see ``BuildConfig``;
            the defaults are GREAM's (docs/gream_spec.md §4.2: balanced, 4 x 256, 3 inits of at most 100 iterations).
            ``codebook_size: auto`` sizes the levels to the catalogue (``auto_codebook_size`` with ``id_space``
            IDs per item), so one recipe fits any dataset.
    """

    def __init__(
        self,
        output_path: str,
        method: str = "balanced_rqkmeans",
        levels: int = 4,
        codebook_size: int | str = 256,
        collision: str = "rank",
        seed: int = 42,
        max_iter: int = 100,
        tol: float = 1e-4,
        n_init: int = 3,
        style: str = "gream",
        id_space: float = 2.4,
    ) -> None:
        super().__init__()
        if isinstance(codebook_size, str) and codebook_size != "auto":
            raise ValueError(f"codebook_size must be a number of codes or 'auto', got {codebook_size!r}")
        self.save_hyperparameters()
        self.build_config(n_items=1)  # the arguments checked now, not after the embeddings
        self.automatic_optimization = False

    def build_config(self, n_items: int) -> BuildConfig:
        h = self.hparams
        size = auto_codebook_size(n_items, h.levels, h.id_space) if h.codebook_size == "auto" else h.codebook_size
        return BuildConfig(h.method, h.levels, size, h.collision, h.seed, h.max_iter, h.tol, h.n_init, h.style)

    def configure_optimizers(self) -> None:
        return None

    def training_step(self, batch, batch_idx: int) -> None:
        if batch_idx or self.current_epoch:
            return
        dm = self.trainer.datamodule
        config = self.build_config(len(dm.embeddings))
        result = build_index(dm.embeddings.numpy(), config)
        result.index.meta.update({"dataset": dm.catalog.name, "encoder": dm.encoder, "fields": dm.fields})
        path = Path(self.hparams.output_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        result.index.to_json(path)
        log.info(
            "%s index of %d items, %d x %d codes -> %s (%.1f s)",
            config.method,
            result.index.n_items,
            config.levels,
            config.codebook_size,
            path,
            result.seconds,
        )

    def test_step(self, batch, batch_idx: int) -> None:
        """The report reads the written index, not the batches; the test loop only has to run."""

    def on_test_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        index = SemanticIndex.from_json(self.hparams.output_path, n_items=dm.catalog.n_items)
        report = index_report(index, dm.catalog, emb=dm.embeddings.numpy())
        self.log_dict({f"index/test/{k.replace('/', '_')}": float(v) for k, v in report.items()})
