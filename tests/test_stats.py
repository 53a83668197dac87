"""Statistics over per-user results against hand-computed values, and report --baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from gream_lit import stats
from gream_lit.experiment.cli import main
from gream_lit.experiment.composition import PipelineError


def test_rank_metrics_by_hand():
    ranks = np.array([0, 1, 4, -1, 9, 10])
    assert stats.rank_metric(ranks, "recall@5").tolist() == [1, 1, 1, 0, 0, 0]
    assert stats.rank_metric(ranks, "recall@10").tolist() == [1, 1, 1, 0, 1, 0]
    assert np.allclose(
        stats.rank_metric(ranks, "ndcg@10"), [1, 1 / math.log2(3), 1 / math.log2(6), 0, 1 / math.log2(11), 0]
    )
    assert np.allclose(stats.rank_metric(ranks, "mrr@5"), [1, 0.5, 0.2, 0, 0, 0])
    with pytest.raises(ValueError, match="unknown per-user metric 'hit10'"):
        stats.rank_metric(ranks, "hit10")


def test_paired_t_pvalue_by_hand():
    a, b = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0])
    # d = [1, 0, 1, 0]: mean 0.5, sd sqrt(1/3), t = 0.5 / (sqrt(1/3) / 2) = sqrt(3)
    assert stats.paired_t_pvalue(a, b) == pytest.approx(2 * sps.t.sf(math.sqrt(3), df=3))
    assert stats.paired_t_pvalue(a, b) == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert stats.paired_t_pvalue(a, a) == 1.0
    assert stats.paired_t_pvalue(a + 1, a) == 0.0


def test_bootstrap_interval_brackets_the_mean_and_degenerates_on_constants():
    ci = stats.bootstrap_interval(np.full(50, 0.25))
    assert (ci.mean, ci.low, ci.high, ci.n) == (0.25, 0.25, 0.25, 50)
    values = np.r_[np.ones(30), np.zeros(70)]
    ci = stats.bootstrap_interval(values, n_boot=4000, seed=1)
    se = math.sqrt(0.3 * 0.7 / 100)  # normal approximation: 0.3 +- 1.96 se
    assert ci.mean == 0.3 and ci.low == pytest.approx(0.3 - 1.96 * se, abs=0.02)
    assert ci.high == pytest.approx(0.3 + 1.96 * se, abs=0.02)
    assert stats.bootstrap_interval(values, seed=3) == stats.bootstrap_interval(values, seed=3)


def test_paired_comparison_and_alignment_on_shared_users():
    users, a, b = stats.align({"u1": 1.0, "u2": 0.0, "u3": 1.0}, {"u2": 1.0, "u3": 1.0, "u4": 0.0})
    assert users == ["u2", "u3"] and a.tolist() == [0.0, 1.0] and b.tolist() == [1.0, 1.0]
    cmp = stats.paired_comparison(np.array([1.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0]))
    assert cmp.diff.mean == 0.25 and cmp.diff.low == 0.0 and cmp.diff.high == 0.75
    with pytest.raises(ValueError, match="aligned on the same users"):
        stats.paired_comparison(np.ones(3), np.ones(2))


def test_fmt_shows_small_values():
    assert stats.fmt(0.06427) == "0.0643" and stats.fmt(1.2e-5) == "1.2e-05" and stats.fmt(0.0) == "0.0000"


def _run(root, name, stage, ranks):
    run = root / name
    (run / stage).mkdir(parents=True)
    (run / "experiment.yaml").write_text(yaml.safe_dump({"name": name, "stages": {stage: {}}}))
    (run / stage / "metrics.json").write_text(json.dumps({f"{stage}/test/ndcg@10": 0.1}))
    rows = [json.dumps({"user": u, "target": "i", "rank": r, "items": []}) for u, r in ranks.items()]
    (run / stage / "test_per_user.jsonl").write_text("\n".join(rows) + "\n")
    return run


def test_report_prints_intervals_and_paired_differences(tmp_path, capsys):
    base = _run(tmp_path, "pop", "mostpop", {"a": -1, "b": 0, "c": -1, "d": -1})
    model = _run(tmp_path, "gream", "align", {"a": 0, "b": 0, "c": 3, "e": 0})
    out = tmp_path / "report"
    assert main(["report", str(model), str(base), "--out", str(out), "--baseline", str(base)]) == 0
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("| gream | align | 4 | recall@10")]
    # shared users a, b, c: recall 1, 1, 1 against 0, 1, 0 -> diff 2/3; d = [1, 0, 1] gives t = 2, df = 2
    assert lines == [
        f"| gream | align | 4 | recall@10 | 1.0000 [1.0000, 1.0000] | 0.6667 [0.0000, 1.0000] on 3 "
        f"| {2 * sps.t.sf(2.0, df=2):.2g} |"
    ]
    assert (out / "intervals.csv").is_file() and (out / "intervals.png").is_file()
    with pytest.raises(PipelineError, match="nothing is not a run directory"):
        main(["report", str(model), "--out", str(out), "--baseline", str(tmp_path / "nothing")])
