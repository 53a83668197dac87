"""The report command on hand-written run directories with hand-computed aggregates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter

from gream_lit.experiment.cli import main
from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.report import write_report
from gream_lit.experiment.report_runs import flatten
from gream_lit.experiment.report_tables import is_index_stage, mean_std


def fake_run(root: Path, name: str, seed: int, ndcg: float, lr: float = 0.001) -> Path:
    run = root / f"{name}_seed{seed}"
    (run / "sasrec").mkdir(parents=True)
    (run / "experiment.yaml").write_text(yaml.safe_dump({"name": name, "stages": {"sasrec": {"model": {}}}}))
    model = {"class_path": "m.SASRec", "init_args": {"lr": lr, "dims": [1, 2]}}
    cfg = {"seed_everything": seed, "model": model, "data": "m.Data"}
    (run / "sasrec" / "config.yaml").write_text(yaml.safe_dump(cfg))
    metrics = {"sasrec/test/ndcg@10": ndcg, "sasrec/val/ndcg@10": ndcg + 0.01}
    (run / "sasrec" / "metrics.json").write_text(json.dumps(metrics))
    with SummaryWriter(str(run / "sasrec" / "tb")) as writer:  # a validation curve: ndcg + step / 10
        for step in (0, 10):
            writer.add_scalar("sasrec/val/ndcg@10", ndcg + step / 10, step)
    return run


def test_mean_and_sample_std_by_hand():
    assert mean_std([0.1, 0.3]) == pytest.approx((0.2, math.sqrt(0.02)))
    assert mean_std([2.0]) == (2.0, 0.0)
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))


def test_flatten_nested_and_lists():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}


def test_report_groups_seeds_writes_table_plots_and_hparams(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "full", 1, 0.1)
    fake_run(runs, "full", 2, 0.3)
    single = fake_run(runs, "no_align", 1, 0.5, lr=0.01)
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0

    table = pd.read_csv(out / "report.csv")  # long format: one row per experiment, stage and metric
    assert list(table["experiment"]) == ["full", "no_align"] and list(table["runs"]) == [2, 1]
    assert list(table["stage"]) == ["sasrec", "sasrec"] and list(table["metric"]) == ["test/ndcg@10"] * 2
    assert table["mean"].tolist() == pytest.approx([0.2, 0.5])
    assert table["std"].tolist() == pytest.approx([math.sqrt(0.02), 0.0])
    assert list(table["users"]) == ["-", "-"]  # no per-user test files in these runs
    md = (out / "report.md").read_text()
    assert "| full | sasrec | test/ndcg@10 | 2 | - | 0.2000 ± 0.1414 (0.1 0.3) |" in md
    assert "| no_align | sasrec | test/ndcg@10 | 1 | - | 0.5000 |" in md
    assert (out / "comparison.png").stat().st_size > 0 and (out / "curves_sasrec.png").stat().st_size > 0
    curves = pd.read_csv(out / "curves.csv")
    full = curves[curves["experiment"] == "full"].sort_values("step")
    # seeds 1 and 2 logged 0.1+s/10 and 0.3+s/10 at steps 0 and 10: mean 0.2 / 1.2, std sqrt(0.02)
    assert full["step"].tolist() == [0, 10] and full["mean"].tolist() == pytest.approx([0.2, 1.2])
    assert full["std"].tolist() == pytest.approx([math.sqrt(0.02)] * 2) and full["runs"].tolist() == [2, 2]

    tb = EventAccumulator(str(out / "tensorboard" / f"no_align__{single.name}"))
    tb.Reload()
    assert tb.Scalars("sasrec/test/ndcg@10")[0].value == pytest.approx(0.5)
    content = tb.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["sasrec.model.lr"].number_value == pytest.approx(0.01)
    assert start.hparams["sasrec.seed"].number_value == 1
    assert start.hparams["sasrec.model"].string_value == "m.SASRec"
    assert start.hparams["sasrec.data"].string_value == "m.Data"
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "sasrec/test/ndcg@10" in [m.name.tag for m in experiment.metric_infos]


def test_report_errors_name_the_problem(tmp_path):
    fake_run(tmp_path / "runs", "full", 1, 0.1)
    with pytest.raises(PipelineError, match="no metric matches"):
        write_report([tmp_path / "runs"], tmp_path / "out", ["*/nothing/*"])
    with pytest.raises(PipelineError, match="neither a run directory"):
        write_report([tmp_path], tmp_path / "out")


def shown_values(chart) -> list[int]:
    """What each panel of a chart shows: the number of bars, or the points of its shortest line."""
    if chart.kind == "bar":
        return [sum(len(s.x) for s in panel.series) for panel in chart.panels]
    return [min(len(s.x) for s in panel.series) for panel in chart.panels]


def index_run(root: Path, name: str, seed: int, ndcg: float, losses: list[float]) -> Path:
    """An index stage (its quality report as test metrics) then a sasrec stage whose TensorBoard file holds
    a training loss at every step and a single validation point."""
    run = fake_run(root, name, seed, ndcg)
    exp = {"name": name, "stages": {"index": {"model": {}}, "sasrec": {"model": {}}}}
    (run / "experiment.yaml").write_text(yaml.safe_dump(exp, sort_keys=False))
    (run / "index").mkdir()
    report = {
        "index/test/collision_rate_after": 0.0,
        "index/test/collision_rate_before": 0.25,
        "index/test/items": 12.0,
    }
    (run / "index" / "metrics.json").write_text(json.dumps(report))
    metrics = json.loads((run / "sasrec" / "metrics.json").read_text())
    (run / "sasrec" / "metrics.json").write_text(json.dumps({**metrics, "sasrec/test/recall@10": 2 * ndcg}))
    with SummaryWriter(str(run / "sasrec" / "tb2")) as writer:
        for step, loss in enumerate(losses):
            writer.add_scalar("sasrec/train/loss", loss, step)
        writer.add_scalar("sasrec/val/recall@10", 0.5, 3)  # one validation: no line of it
    return run


def test_index_statistics_get_their_own_table_and_no_chart_shows_a_single_value(tmp_path):
    runs = tmp_path / "runs"
    index_run(runs, "full", 1, 0.1, [3.0, 2.0, 1.0])
    index_run(runs, "full", 2, 0.3, [3.0, 1.0, 0.5])
    index_run(runs, "small", 1, 0.5, [2.0, 1.5, 1.0])
    result = write_report([runs], tmp_path / "out")

    table = pd.read_csv(tmp_path / "out" / "report.csv")
    assert set(table["stage"]) == {"sasrec"}  # the index report is not a ranking metric
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert (
        list(index["experiment"]) == ["full", "full", "small"] and index["collision_rate_before"].tolist() == [0.25] * 3
    )
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.index("## Metrics") < md.index("## Index statistics")
    assert "| collision_rate_after | 0 | 0 | 0 |" in md.split("## Index statistics")[1]

    charts = {c.file: c for c in result.charts}
    assert sorted(charts) == ["comparison.png", "curves_sasrec.png"]
    assert all(n >= 2 for c in result.charts for n in shown_values(c))
    # spread only over seeds: full (2 seeds) has error bars, small (1 run) none
    recall = next(p for p in charts["comparison.png"].panels if p.title == "test/recall@10")
    (full, small) = recall.series
    assert full.y == pytest.approx([0.4]) and full.err == pytest.approx([math.sqrt(0.08)]) and small.err is None
    # learning curves: the loss against steps and against time; the single validation point is left out
    curves = charts["curves_sasrec.png"]
    assert [p.title for p in curves.panels] == [
        "train/loss by step",
        "train/loss by time",
        "val/ndcg@10 by step",
        "val/ndcg@10 by time",
    ]
    loss = curves.panels[0].series
    assert [s.label for s in loss] == ["full (2 seeds)", "small"]
    assert loss[0].x == [0, 1, 2] and loss[0].y == pytest.approx([3.0, 1.5, 0.75]) and loss[1].err is None
    assert (tmp_path / "out" / "curves_sasrec.png").stat().st_size > 0

    one = write_report([runs / "small_seed1"], tmp_path / "one")  # a single run: nothing to compare
    assert [c.file for c in one.charts] == ["curves_sasrec.png"]
    assert not (tmp_path / "one" / "comparison.png").exists()


def test_index_stages_are_told_by_their_collision_rate():
    assert is_index_stage({"index/test/collision_rate_after": 0.0}, "index")  # the k-means quality report
    assert is_index_stage({"rqvae/test/collision_rate": 0.1, "rqvae/test/recon": 0.2}, "rqvae")  # RQ-VAE
    assert not is_index_stage({"sasrec/test/ndcg@10": 0.1, "index/test/collision_rate": 0.0}, "sasrec")
