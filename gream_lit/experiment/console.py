"""Keep the console to our tables: silence third-party notices we cannot act on.

Filtered by their exact text, so a new or different warning still shows:
- Lightning's tips to install litlogger / litmodels (an INFO line per trainer);
- the ``LeafSpec`` deprecation torch raises from Lightning's own pytree helper;
- LightningCLI's notice that ``args=`` and ``sys.argv`` are both set: the pipeline builds each stage's
  ``args`` on purpose while ``sys.argv`` holds the pipeline's command line;
- Optuna's notices that the heartbeat a sweep's workers beat is an experimental feature;
- transformers' deprecation of ``is_gradient_checkpointing``, which peft reads when it wraps a model;
- Lightning's notice of modules in eval mode at the start of training: SRPO updates its policy in eval
  mode on purpose (old and new log-probs from the same function, no dropout);
- peft's notice that a chained adapter's base folder has no ``config.json``: the base of a later stage is
  the earlier stage's adapter folder, and the trained ID-token rows are saved explicitly.
- Lightning's notices that a module has no optimizer or no validation step: MostPop and RQ-KMeans learn
  nothing by gradient, and the item-embedding data serves RQ-VAE's validation, which RQ-KMeans does not run;
- transformers' note that new embedding rows are drawn from the old rows' mean and covariance: that is
  the ``hf_default`` ID-token initialisation, asked for on purpose (``modeling.vocab``).
"""

from __future__ import annotations

import logging
import warnings

TIPS = ("💡 Tip: For seamless cloud",)
MEAN_RESIZING = ("The new embeddings will be initialized from a multivariate normal distribution",)


class _DropTips(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...] = TIPS) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_third_party() -> None:
    """Install the filters (idempotent)."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r"Could not find a config file in .* will assume that the vocabulary")
    warnings.filterwarnings(
        "ignore", message=r".*(heartbeat_interval``|RetryHeartbeatStaleTrialCallback\S*) is (an )?experimental"
    )
    warnings.filterwarnings("ignore", message=r"`LightningModule.configure_optimizers` returned `None`")
    warnings.filterwarnings("ignore", message=r"You passed in a `val_dataloader` but have no `validation_step`")
    loggers = [(n, TIPS) for n in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")]
    for name, prefixes in [*loggers, ("transformers.modeling_utils", MEAN_RESIZING)]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips(prefixes))
