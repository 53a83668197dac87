"""GREAM's staged pipeline end to end through the real CLI: index -> align -> rl on a tiny random
chat model and a tiny synthetic catalogue, one or two steps each, the stages handing over files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import gream_lit
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.experiment.cli import main
from gream_lit.experiment.composition import PipelineError
from gream_lit.experiment.report import write_report
from gream_lit.modeling.tiny import save_tiny_backbone

N_ITEMS = 12


pytestmark = pytest.mark.usefixtures("one_thread")


def write_inputs(root: Path) -> dict[str, str]:
    """LC-Rec json catalogue (12 items, 10 users), item embeddings in 4 clusters, a tiny chat backbone."""
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir(parents=True)
    items = {str(i): {"title": f"Widget {i}", "description": f"Part number {i}."} for i in range(N_ITEMS)}
    inter = {f"u{u}": [int(x) for x in rng.integers(0, N_ITEMS, size=int(rng.integers(5, 8)))] for u in range(10)}
    (data / "Toy.item.json").write_text(json.dumps(items))
    (data / "Toy.inter.json").write_text(json.dumps(inter))
    centres = rng.normal(size=(4, 8)) * 5
    emb = centres[np.arange(N_ITEMS) % 4] + rng.normal(size=(N_ITEMS, 8))
    np.save(root / "emb.npy", emb.astype(np.float32))
    return {
        "data_dir": str(data),
        "embeddings": str(root / "emb.npy"),
        "backbone": save_tiny_backbone(root / "tiny", hidden_size=32, num_layers=1),
    }


def experiment(paths: dict[str, str]) -> dict:
    trainer = {"max_epochs": 1, "limit_val_batches": 1, "limit_test_batches": 1}
    return {
        "name": "tiny_gream",
        "seed_everything": 0,
        "defaults": {
            "trainer": {
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "num_sanity_val_steps": 0,
                "log_every_n_steps": 1,
            }
        },
        "stages": {
            "index": {
                "model": {
                    "class_path": "gream_lit.indexing.rqkmeans_stage.RQKMeansIndex",
                    "init_args": {
                        "output_path": "${stage_dir}/Toy.index.json",
                        "levels": 2,
                        "codebook_size": 4,
                        "max_iter": 10,
                        "n_init": 1,
                    },
                },
                "data": {
                    "class_path": "gream_lit.indexing.rqvae.ItemEmbeddingDataModule",
                    "init_args": {"data_dir": paths["data_dir"], "embeddings": paths["embeddings"]},
                },
                "trainer": {"max_epochs": 1, "limit_train_batches": 1},
                "artifacts": {"index": "Toy.index.json"},
            },
            "align": {
                "model": {
                    "class_path": "gream_lit.alignment.sft_module.SFTModule",
                    "init_args": {
                        "lr": 3e-3,
                        "num_beams": 4,
                        "stage": "align",
                        "lora": {"r": 2, "alpha": 4},
                        "export_dir": "${stage_dir}/hf",
                    },
                },
                "data": {
                    "class_path": "gream_lit.alignment.sft_data.AlignmentDataModule",
                    "init_args": {
                        "data_dir": paths["data_dir"],
                        "index_path": "${prev.artifacts.index}",
                        "backbone": paths["backbone"],
                        "batch_size": 8,
                        "eval_batch_size": 4,
                        "val_users": 4,
                        "max_eval_users": 4,
                    },
                },
                "trainer": {**trainer, "limit_train_batches": 2},
                "artifacts": {"model": "hf/adapter"},
            },
            "rl": {
                "model": {
                    "class_path": "gream_lit.rl.srpo_module.SRPOModule",
                    "init_args": {
                        "backbone": "${prev.artifacts.model}",
                        "mode": "direct",
                        "rollout": {"n": 4, "max_new_tokens": 4},
                        "val_sampling": {"n": 2, "max_new_tokens": 4},
                        "test_sampling": {"n": 2, "max_new_tokens": 4},
                        "update_groups": 1,
                        "max_gen_batches": 1,
                        "mini_batch_groups": 1,
                        "pass_k": 2,
                        "lr": 1e-3,
                        "warmup_steps": 1,
                        "export_dir": "${stage_dir}/hf/model",
                    },
                },
                "data": {
                    "class_path": "gream_lit.rl.rl_data.RLDataModule",
                    "init_args": {
                        "data_dir": paths["data_dir"],
                        "index_path": "${prev.artifacts.index}",
                        "mode": "direct",
                        "min_history": 2,
                        "batch_size": 2,
                        "eval_batch_size": 4,
                        "max_eval_users": 4,
                    },
                },
                "trainer": {**trainer, "limit_train_batches": 2},
                "artifacts": {"model": "hf/model"},
            },
        },
    }


def reasoning_curriculum(align: dict, reasoning: dict, **data: object) -> dict:
    """A curriculum stage (ReasoningSFTModule) continuing ``align``'s model with its settings; ``data``
    overrides its data module's arguments."""
    return {
        "model": {
            "class_path": "gream_lit.curriculum.reasoning_module.ReasoningSFTModule",
            "init_args": {**align["model"]["init_args"], "stage": "curriculum", "reasoning": reasoning},
        },
        "data": {
            "class_path": "gream_lit.curriculum.curriculum_data.CurriculumDataModule",
            "init_args": {
                **align["data"]["init_args"],
                "backbone": "${prev.artifacts.model}",
                "max_length": 4096,  # the byte-level toy tokenizer spells the reasoning prompts in bytes
                "tasks": {"seqrec": {"data_samples": 8}, "item2index": {"enabled": False}},
                **data,
            },
        },
        "trainer": align["trainer"],
        "artifacts": {"model": "hf/adapter"},
    }


def test_one_backbone_override_switches_the_pipelines_llm(tmp_path: Path) -> None:
    """The experiment names its LLM once; ``--backbone`` replaces it in every stage that starts from it."""
    paths = write_inputs(tmp_path)
    exp = experiment(paths)
    exp["backbone"] = "no-such-model"
    exp["stages"]["align"]["data"]["init_args"]["backbone"] = "${backbone}"
    del exp["stages"]["rl"]
    config = tmp_path / "tiny_gream.yaml"
    config.write_text(yaml.safe_dump(exp, sort_keys=False))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run), "--backbone", paths["backbone"]]) == 0
    align_cfg = yaml.safe_load((run / "align" / "config.yaml").read_text())
    assert align_cfg["data"]["init_args"]["backbone"] == paths["backbone"]
    assert yaml.safe_load((run / "experiment.yaml").read_text())["backbone"] == paths["backbone"]
    assert (run / "align" / "DONE").is_file()


def test_tiny_gream_pipeline_hands_index_and_model_through(tmp_path: Path, capsys) -> None:
    from transformers import AutoTokenizer

    paths = write_inputs(tmp_path)
    config = tmp_path / "tiny_gream.yaml"
    config.write_text(yaml.safe_dump(experiment(paths), sort_keys=False))  # stage order matters
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run)]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("stages in pipeline order") :].splitlines()
    assert summary[1].split() == ["stage", "test", "users", "recall@10", "ndcg@10"]
    rows = {line.split()[0]: line.split() for line in summary[3:6]}
    assert list(rows) == ["index", "align", "rl"]
    align_ndcg = json.loads((run / "align" / "metrics.json").read_text())["align/test/ndcg@10"]
    assert rows["align"][1] == "4" and rows["align"][3] == f"{align_ndcg:.4f}"
    assert rows["index"][1:] == ["–", "–", "–"]

    index = SemanticIndex.from_json(run / "index" / "Toy.index.json", n_items=N_ITEMS)
    assert index.collisions() == 0
    assert len({tuple(row[:1]) for row in index.codes}) == 4  # the four embedding clusters
    align_cfg = yaml.safe_load((run / "align" / "config.yaml").read_text())
    rl_cfg = yaml.safe_load((run / "rl" / "config.yaml").read_text())
    assert align_cfg["data"]["init_args"]["index_path"] == str(run / "index" / "Toy.index.json")
    assert rl_cfg["data"]["init_args"]["index_path"] == str(run / "index" / "Toy.index.json")
    assert rl_cfg["model"]["init_args"]["backbone"] == str(run / "align" / "hf" / "adapter")
    assert not (run / "align" / "hf" / "model").exists()  # the adapter is the hand-off, no merged copy
    for stage in ("index", "align", "rl"):
        assert (run / stage / "DONE").is_file()
    align_metrics = json.loads((run / "align" / "metrics.json").read_text())
    rl_metrics = json.loads((run / "rl" / "metrics.json").read_text())
    assert "align/test/ndcg@10" in align_metrics and "rl/test/ndcg@10" in rl_metrics
    assert rl_metrics["rl/val/users"] >= 1 and rl_metrics["rl/val/users_available"] >= rl_metrics["rl/val/users"]
    assert "index/test/collision_rate_after" in json.loads((run / "index" / "metrics.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(run / "rl" / "hf" / "model")
    assert set(index.all_tokens()) <= set(tokenizer.get_vocab())
    # every hand-off is a bundle whose card carries the stage's test metrics
    from gream_lit import load_recommender

    for stage, folder in (("align", "adapter"), ("rl", "model")):
        bundle = json.loads((run / stage / "hf" / folder / "gream_bundle.json").read_text())
        assert bundle["metrics"][f"{stage}/test/ndcg@10"] == pytest.approx(
            json.loads((run / stage / "metrics.json").read_text())[f"{stage}/test/ndcg@10"]
        )
    items = bundle["item_ids"]
    ranked = load_recommender(run / "rl" / "hf" / "model").recommend(items[:3], k=3)
    assert len(ranked) == 3 and set(ranked) <= set(items)
    # TensorBoard's hparams tab shows each stage's test NDCG@10, not Lightning's placeholder -1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage in ("align", "rl"):
        hp = []
        for events in (run / stage).rglob("events.out.tfevents.*"):
            acc = EventAccumulator(str(events))
            acc.Reload()
            hp += [e.value for e in acc.Scalars("hp_metric")] if "hp_metric" in acc.Tags()["scalars"] else []
        ndcg = json.loads((run / stage / "metrics.json").read_text())[f"{stage}/test/ndcg@10"]
        assert pytest.approx(ndcg) in hp

    # a rerun finds every stage finished and trains nothing
    done = {stage: (run / stage / "DONE").read_text() for stage in ("index", "align", "rl")}
    assert main(["fit", "--config", str(config), "--run_dir", str(run)]) == 0
    assert done == {stage: (run / stage / "DONE").read_text() for stage in done}


def test_compact_dense_pipeline_writes_per_user_results_and_reports_paired_differences(tmp_path: Path) -> None:
    """index -> align (seqdense, compact prompts, ID-vocabulary softmax) -> rl (compact prompts, rollouts
    and beam search over the ID vocabulary), then its report: intervals, the index in its own table, and
    charts that each show more than one value."""
    paths = write_inputs(tmp_path)
    exp = experiment(paths)
    exp["stages"]["align"]["model"]["init_args"].update(logits_vocab="ids", lr_schedule="linear")
    exp["stages"]["align"]["data"]["init_args"].update(
        prompt_format="compact",
        tasks={
            "seqdense": {"enabled": True},
            **{t: {"enabled": False} for t in ("seqrec", "item2index", "index2item", "fusionseqrec")},
        },
    )
    exp["stages"]["rl"]["model"]["init_args"].update(eval_decoding="beam", logits_vocab="ids")
    exp["stages"]["rl"]["data"]["init_args"]["prompt_format"] = "compact"
    for stage in ("align", "rl"):
        exp["stages"][stage]["trainer"]["limit_test_batches"] = 1.0
    config = tmp_path / "tiny_compact.yaml"
    config.write_text(yaml.safe_dump(exp, sort_keys=False))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run)]) == 0
    for stage in ("align", "rl"):
        rows = [json.loads(line) for line in (run / stage / "test_per_user.jsonl").read_text().splitlines()]
        assert len(rows) == 4 and all(0 <= int(i) < N_ITEMS for r in rows for i in r["items"])

    report = write_report([run], tmp_path / "report", baseline=f"{run}:align")
    intervals = (tmp_path / "report" / "intervals.md").read_text()
    assert "| tiny_gream | rl | 4 | ndcg@10 |" in intervals and "on 4 |" in intervals
    assert "| tiny_gream | align | 4 | ndcg@10 |" in intervals and "(the baseline)" in intervals  # not against itself
    assert "index" not in set(report.table["stage"]) and report.index["collision_rate_after"].tolist() == [0.0]
    # the data behind every chart: no chart of a single bar, no line of a single point
    charts = {c.file: c for c in report.charts}
    for chart in report.charts:
        for panel in chart.panels:
            if chart.kind == "bar":
                assert sum(len(s.x) for s in panel.series) >= 2, (chart.file, panel.title)
            else:
                assert all(len(s.x) >= 2 for s in panel.series), (chart.file, panel.title)
    assert "comparison.png" not in charts  # one run: nothing to compare
    # the alignment's two training steps make a loss curve; its one validation and SRPO's one update do not
    assert [p.title for p in charts["curves_align.png"].panels] == ["train/loss by step", "train/loss by time"]
    assert [s.x for s in charts["curves_align.png"].panels[0].series] == [[0, 1]]
    assert (tmp_path / "report" / "curves_align.png").stat().st_size > 0
    intervals_chart = charts["intervals.png"]  # align and rl per metric; rl's one difference is no chart
    assert [p.title for p in intervals_chart.panels] == ["recall@10", "ndcg@10"]


def test_predict_ranks_raw_item_ids_for_every_llm_stage_in_both_modes(tmp_path: Path, capsys) -> None:
    """index -> align -> curriculum, then ``predict`` on the run directory: every stage that ranks items
    writes its test users' ranked raw item ids; the curriculum also in reasoning mode, with the text it
    wrote; its bundle recommends from raw ids in both modes."""
    paths = write_inputs(tmp_path)
    words = ["drill", "screw", "tape", "glove", "clamp", "saw", "bolt", "nut", "wire", "lamp", "fan", "hook"]
    items = {  # text the template teacher can reason about
        str(i): {"title": f"{w.title()} model {i}", "description": f"A sturdy {w} for the workshop."}
        for i, w in enumerate(words)
    }
    (Path(paths["data_dir"]) / "Toy.item.json").write_text(json.dumps(items))
    exp = experiment(paths)
    align = exp["stages"].pop("align")
    exp["stages"].pop("rl")
    curriculum = reasoning_curriculum(align, {"max_new_tokens": 6, "num_beams": 4}, teacher={"kind": "template"})
    exp["stages"].update(align=align, curriculum=curriculum)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(exp, sort_keys=False))  # stage order is pipeline order
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run)]) == 0
    capsys.readouterr()

    assert main(["predict", str(run)]) == 0
    out = capsys.readouterr().out
    catalogue = json.loads((run / "curriculum" / "hf" / "adapter" / "gream_bundle.json").read_text())["item_ids"]
    tested = {
        stage: len((run / stage / "test_per_user.jsonl").read_text().splitlines()) for stage in ("align", "curriculum")
    }
    for stage in ("align", "curriculum"):
        rows = [json.loads(line) for line in (run / stage / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == tested[stage] and f"stage {stage}: {len(rows)} users" in out
        assert all(0 < len(r["items"]) <= 4 and set(r["items"]) <= set(catalogue) for r in rows)
        assert all("reasoning" not in r for r in rows)
    assert not (run / "index" / "predictions.jsonl").exists()  # the index stage ranks nothing

    assert main(["predict", str(run), "--stage", "curriculum", "--mode", "reasoning"]) == 0
    rows = [json.loads(line) for line in (run / "curriculum" / "predictions_reasoning.jsonl").read_text().splitlines()]
    assert len(rows) == tested["curriculum"]
    assert all(set(r["items"]) <= set(catalogue) and r["reasoning"].startswith("<think>") for r in rows)
    with pytest.raises(PipelineError, match="stage 'align' cannot predict in reasoning mode: it has no reasoning mode"):
        main(["predict", str(run), "--stage", "align", "--mode", "reasoning"])

    # a reasoning-mode test on a fixed sample of users lands beside the stage's own test, not over it
    own = (run / "curriculum" / "test_per_user.jsonl").read_text()
    capsys.readouterr()
    assert main(["test", str(run), "--stage", "curriculum", "--mode", "reasoning", "--max_eval_users", "2"]) == 0
    folder = run / "curriculum" / "eval_reasoning_2users"
    reasoned = [json.loads(line) for line in (folder / "test_per_user.jsonl").read_text().splitlines()]
    metrics = json.loads((folder / "test_metrics.json").read_text())
    assert len(reasoned) == 2 and "curriculum/test/parse_rate" in metrics
    assert (run / "curriculum" / "test_per_user.jsonl").read_text() == own
    summary = capsys.readouterr().out
    assert summary[summary.index("stages in pipeline order") :].splitlines()[3].split()[:2] == ["curriculum", "2"]
    with pytest.raises(PipelineError, match="stage 'align' cannot test in reasoning mode: it has no reasoning mode"):
        main(["test", str(run), "--stage", "align", "--mode", "reasoning"])

    from gream_lit import load_recommender

    rec = load_recommender(run / "curriculum" / "hf" / "adapter")
    history = catalogue[:3]
    assert set(rec.recommend(history, k=3)) <= set(catalogue)
    items, text = rec.recommend_with_reasoning(history, k=3)
    assert 0 < len(items) <= 3 and set(items) <= set(catalogue) and text.startswith("<think>")
    assert rec.recommend_many([history], k=3, mode="reasoning") == [items]  # greedy thinking: the same answer
    with pytest.raises(ValueError, match="not trained to reason"):
        load_recommender(run / "align" / "hf" / "adapter").recommend(history, mode="reasoning")

    # the bundles survive moving the run folder: each loads from its new place in a fresh process
    before = {stage: load_recommender(run / stage / "hf" / "adapter").recommend(history, k=3) for stage in tested}
    adapter = json.loads((run / "curriculum" / "hf" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "../../../align/hf/adapter"
    moved = tmp_path / "elsewhere" / "moved_run"
    moved.parent.mkdir()
    shutil.move(run, moved)
    for stage in tested:
        folder = moved / stage / "hf" / "adapter"
        card = (folder / "README.md").read_text()
        assert f"base_model: {paths['backbone']}" in card and "dataset: `Toy`" in card
        assert "Protocol: leave-one-out, ranked over the full catalogue (a user's earlier items" in card
        snippet = (
            "import json; from gream_lit import load_recommender; rec = load_recommender('.'); "
            f"items = rec.recommend({history!r}, k=3); print(json.dumps([items, rec.titles(items)]))"
        )
        env = {**os.environ, "PYTHONPATH": str(Path(gream_lit.__file__).parents[1])}  # a fresh process, elsewhere
        out = subprocess.run([sys.executable, "-c", snippet], cwd=folder, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        items, titles = json.loads(out.stdout.splitlines()[-1])
        assert items == before[stage]
        assert titles == [f"{words[int(i)].title()} model {i}" for i in items]
    (moved / "align").rename(moved / "align_gone")
    with pytest.raises(FileNotFoundError, match="'../../../align/hf/adapter'.*move or copy the whole run folder"):
        load_recommender(moved / "curriculum" / "hf" / "adapter")


def test_a_full_fine_tuning_stage_keeps_one_copy_of_the_model(tmp_path: Path) -> None:
    """Without LoRA each checkpoint is a whole model: ``last.ckpt`` links to the kept one."""
    from gream_lit.experiment.pipeline import resume_checkpoint
    from gream_lit.experiment.stage_configs import trains_full_model

    paths = write_inputs(tmp_path)
    exp = experiment(paths)
    exp["stages"].pop("rl")
    assert trains_full_model(exp["stages"]["align"]) is False  # LoRA: slim checkpoints, a copy each
    exp["stages"]["align"]["model"]["init_args"].pop("lora")
    exp["stages"]["align"]["artifacts"] = {"model": "hf/model"}  # a full model is handed off
    assert trains_full_model(exp["stages"]["align"]) is True
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(exp, sort_keys=False))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--run_dir", str(run)]) == 0
    ckpts = run / "align" / "checkpoints"
    last = ckpts / "last.ckpt"
    files = [p for p in ckpts.iterdir() if p.is_file() and not p.is_symlink()]
    assert last.is_symlink() and len(files) == 1 and last.resolve() == files[0].resolve()
    assert resume_checkpoint(ckpts) == str(last)


def test_the_readme_recommender_example_runs_on_a_pipelines_bundles(tmp_path: Path, monkeypatch) -> None:
    """README, "Using a trained model": its code block, run as written against a tiny
    index -> align -> curriculum -> rl pipeline whose catalogue holds the raw ids the example uses."""
    import re

    paths = write_inputs(tmp_path)
    data = Path(paths["data_dir"])
    raw = [1, 50, 181, 172, 174, 258, 302, 303, 304, 305, 306, 307]  # the README's ids, then others
    items = json.loads((data / "Toy.item.json").read_text())
    (data / "Toy.item.json").write_text(json.dumps({str(raw[int(k)]): v for k, v in items.items()}))
    inter = json.loads((data / "Toy.inter.json").read_text())
    (data / "Toy.inter.json").write_text(json.dumps({u: [raw[i] for i in seq] for u, seq in inter.items()}))
    exp = experiment(paths)
    align = exp["stages"]["align"]
    curriculum = reasoning_curriculum(align, {"max_new_tokens": 4, "num_beams": 10}, cot=False)
    rl = exp["stages"].pop("rl")
    rl["model"]["init_args"].update(lora={"r": 2, "alpha": 4}, export_dir="${stage_dir}/hf/adapter")
    rl["artifacts"] = {"model": "hf/adapter"}  # as in the quickstart: a LoRA policy on the curriculum's bundle
    exp["stages"].update(curriculum=curriculum, rl=rl)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(exp, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(config), "--run_dir", "runs/quickstart"]) == 0
    (tmp_path / "runs" / "quickstart_short_reasoning").symlink_to("quickstart")

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = re.findall(r"```python\n(from gream_lit import load_recommender\n.*?)```", readme, re.DOTALL)
    scope: dict = {}
    exec(code, scope)
    catalogue = {str(i) for i in raw}
    assert set(scope["items"]) <= catalogue and 0 < len(scope["items"]) <= 10
    assert scope["text"].startswith("<think>")
    assert set(scope["rec"].recommend(["1", "50", "181"], k=10)) <= catalogue
    assert scope["titles"] == [items[str(raw.index(int(i)))]["title"] for i in scope["top"]]
