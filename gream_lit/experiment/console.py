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
"""

from __future__ import annotations

import logging
import warnings

TIPS = ("💡 Tip: For seamless cloud",)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(TIPS)


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
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
