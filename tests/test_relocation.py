"""Where a saved stage config says its run directory is, so a copied run can be adopted."""

from pathlib import Path

from gream_lit.experiment.relocation import recorded_root


def test_a_bare_callback_class_path_before_the_checkpoint_is_skipped() -> None:
    """Saved configs list argument-less callbacks as bare strings (``TQDMProgressBar`` first in the
    Scientific CPU pipeline); resuming such a run used to fail on them."""
    config = {
        "trainer": {
            "callbacks": [
                "lightning.pytorch.callbacks.TQDMProgressBar",
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": "/old/runs/exp/align/checkpoints"},
                },
            ]
        }
    }
    assert recorded_root(config) == Path("/old/runs/exp")


def test_only_bare_callbacks_fall_back_to_the_logger_folder() -> None:
    config = {
        "trainer": {
            "callbacks": ["lightning.pytorch.callbacks.TQDMProgressBar"],
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "/old/runs/exp/align"},
            },
        }
    }
    assert recorded_root(config) == Path("/old/runs/exp")
    assert recorded_root({"trainer": {"callbacks": ["lightning.pytorch.callbacks.TQDMProgressBar"]}}) is None
