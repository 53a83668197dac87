"""Peak memory and time per phase: phases follow the Lightning hooks, allocations land in their phase."""

import json
from types import SimpleNamespace

import torch
from lightning.pytorch.trainer.states import TrainerFn

from gream_lit.experiment.resource_usage import ResourceUsage, read_resources


def test_phases_follow_the_hooks_and_the_peak_lands_in_its_phase(tmp_path):
    cb = ResourceUsage(tmp_path, interval=60.0)  # samples only at phase switches and on demand
    trainer = SimpleNamespace(is_global_zero=True, log_dir=None, default_root_dir=str(tmp_path))
    cb.setup(trainer, None, "fit")
    cb.on_train_start(trainer, None)
    big = torch.ones(64, 2**20)  # 256 MiB while training
    cb._sample()
    del big
    cb.on_validation_start(trainer, None)
    assert cb._phase == "validate"
    cb.on_validation_end(trainer, None)
    assert cb._phase == "train"
    cb.teardown(trainer, None, "fit")
    record = read_resources(tmp_path)
    assert set(record["phases"]) == {"load", "train", "validate"}
    phases = record["phases"]
    assert phases["train"]["peak_rss_gb"] >= phases["load"]["peak_rss_gb"] + 0.2
    assert record["peak_rss_gb"] == max(p["peak_rss_gb"] for p in phases.values())
    assert all(p["seconds"] >= 0 for p in phases.values())

    assert cb._thread is None  # sampling stops with each run: no thread left behind per stage
    cb.setup(trainer, None, "test")  # the test after fit adds to the same record
    assert cb._thread.is_alive()
    cb.on_test_start(trainer, None)
    cb.teardown(trainer, None, "test")
    assert "test" in read_resources(tmp_path)["phases"] and cb._thread is None


def test_a_test_only_run_does_not_overwrite_the_fit_record(tmp_path):
    (tmp_path / "resources.json").write_text(json.dumps({"peak_rss_gb": 1.0, "phases": {"train": {}}}))
    cb = ResourceUsage(tmp_path, interval=60.0)
    trainer = SimpleNamespace(is_global_zero=True, log_dir=None, default_root_dir=str(tmp_path))
    cb.setup(trainer, None, TrainerFn.TESTING)  # what Lightning passes
    cb.on_test_start(trainer, None)
    cb.teardown(trainer, None, TrainerFn.TESTING)
    assert read_resources(tmp_path)["peak_rss_gb"] == 1.0
    assert set(read_resources(tmp_path, "test_resources.json")["phases"]) == {"load", "test"}
