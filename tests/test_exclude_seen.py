"""``exclude_seen`` end to end below the pipeline: the data modules' ``seen`` rows, the baselines' masked
rankings, sampled rankings, the LLM stage's test and the bundle's ``recommend``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_baselines import quiet_trainer, write_lcrec
from test_sft import tiny_config, write_toy_dataset

from gream_lit import load_recommender
from gream_lit.baselines import MostPop
from gream_lit.baselines.ranking import top_items
from gream_lit.baselines.seqrec_data import SeqRecDataModule
from gream_lit.experiment.cli import main
from gream_lit.inference.exclusion import drop_seen


def test_top_items_never_returns_a_seen_index_and_stays_full() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    seen = torch.tensor([[0, 2, -1], [4, -1, -1]])
    assert top_items(scores, 3, seen).tolist() == [[1, 4, 3], [3, 2, 1]]
    assert top_items(scores, 3).tolist() == [[0, 1, 2], [4, 3, 2]]
    assert top_items(scores[:1], 5, torch.tensor([[0, 1, 2]])).tolist() == [[4, 3, -1, -1, -1]]


def test_drop_seen_moves_the_rest_up_and_pads_with_minus_one() -> None:
    items = torch.tensor([[3, 1, -1, 2], [5, 5, 0, 4]])
    assert drop_seen(items, torch.tensor([[1, -1], [5, 4]])).tolist() == [[3, -1, 2, -1], [0, -1, -1, -1]]
    assert drop_seen(items, None) is items


def test_seen_is_the_whole_sequence_before_the_target_not_the_prompt_window(tmp_path) -> None:
    sequences = [[0, 1, 2, 3, 4], [5, 1, 5, 2]]
    data = SeqRecDataModule(str(write_lcrec(tmp_path / "toy", sequences, 6)), max_history=1, exclude_seen=True)
    data.setup("fit")
    data.setup("test")
    valid = next(iter(data.val_dataloader()))
    test = next(iter(data.test_dataloader()))
    assert valid["history"].tolist() == [[3], [2]]  # the window holds one item (token = index + 1) ...
    assert [sorted(i for i in row if i >= 0) for row in valid["seen"].tolist()] == [[0, 1, 2], [1, 5]]
    assert [sorted(i for i in row if i >= 0) for row in test["seen"].tolist()] == [[0, 1, 2, 3], [1, 5]]  # ... seen all
    plain = SeqRecDataModule(str(write_lcrec(tmp_path / "plain", sequences, 6)))
    plain.setup("test")
    assert "seen" not in next(iter(plain.test_dataloader()))


def test_mostpop_with_exclude_seen_skips_each_users_history(tmp_path) -> None:
    sequences = [[0, 1, 2, 3], [1, 2, 3], [4, 1, 0, 2, 4]]  # training parts: popularity 1, 0, 4, 2, 3
    data = SeqRecDataModule(str(write_lcrec(tmp_path / "toy", sequences, 5)), exclude_seen=True, eval_batch_size=3)
    model = MostPop()
    [result] = quiet_trainer(tmp_path).test(model, datamodule=data)
    ranked = model.rank(next(iter(data.test_dataloader())), 10).tolist()
    assert ranked == [[4, 3, -1, -1, -1], [0, 4, 3, -1, -1], [3, -1, -1, -1, -1]]  # -1: nothing left to rank
    # test targets 3, 3, 4 at ranks 2, 3 and nowhere: user 2 had item 4 before, a repeat the mask forbids
    assert result["mostpop/test/recall@5"] == pytest.approx(2 / 3)
    assert result["mostpop/test/mrr@5"] == pytest.approx((1 / 2 + 1 / 3) / 3)


def test_the_llm_stage_tests_and_recommends_without_seen_items(tmp_path) -> None:
    paths = write_toy_dataset(tmp_path)
    config = tiny_config(paths)
    config["data"]["init_args"]["exclude_seen"] = True
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(path), "--trainer.default_root_dir", str(run)]) == 0
    inter = json.loads((tmp_path / "data" / "Toy.inter.json").read_text())
    rows = [json.loads(line) for line in (run / "test_per_user.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        seen = {str(i) for i in inter[row["user"]][:-1]}
        assert len(row["items"]) == 4 and not seen & set(row["items"])

    rec = load_recommender(run / "hf" / "adapter")
    history = [str(i) for i in inter["u0"][:-1]]
    masked = rec.recommend(history, k=4, exclude_seen=True)
    assert len(masked) == 4 and not set(masked) & set(history)
    with pytest.raises(ValueError, match="every catalogue item is excluded"):
        rec.recommend([str(i) for i in range(12)], k=4, exclude_seen=True)


def test_a_finished_run_is_tested_and_predicted_without_seen_items_beside_its_own_results(tmp_path, capsys) -> None:
    """``test``/``predict --exclude_seen`` on a run directory: every ranking stage gives each user none of
    their history, in files beside the stage's own results; the SFT stage's beams keep the list full, the
    SRPO stage (sampled decoding, 2 samples) drops what it sampled from the history."""
    from test_gream_pipeline import experiment, write_inputs

    paths = write_inputs(tmp_path)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(experiment(paths), sort_keys=False))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run)]) == 0
    own = {stage: (run / stage / "test_per_user.jsonl").read_text() for stage in ("align", "rl")}
    inter = json.loads((tmp_path / "data" / "Toy.inter.json").read_text())
    capsys.readouterr()

    assert main(["test", str(run), "--exclude_seen"]) == 0
    assert main(["predict", str(run), "--exclude_seen"]) == 0
    for stage in ("align", "rl"):
        assert (run / stage / "test_per_user.jsonl").read_text() == own[stage]
        tested = (run / stage / "eval_direct_exclude_seen" / "test_per_user.jsonl").read_text().splitlines()
        predicted = (run / stage / "predictions_exclude_seen.jsonl").read_text().splitlines()
        for row in map(json.loads, tested + predicted):
            history = {str(i) for i in inter[row["user"]][:-1]}
            assert not history & set(row["items"])
            assert len(row["items"]) == 4 if stage == "align" else len(row["items"]) <= 2
    assert not (run / "index" / "eval_direct_exclude_seen").exists()  # the index ranks nothing
