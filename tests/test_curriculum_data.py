"""Curriculum SFT data: order kept, counts per schedule, CoT off, CoT from a file; the CLI in reasoning mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gream_lit.curriculum.curriculum_data import CurriculumDataModule
from gream_lit.data.samplers import SequentialDistributedSampler
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.text_format import REASONING_SYSTEM_PROMPT
from gream_lit.experiment.cli import main
from gream_lit.experiment.composition import compose_file
from gream_lit.modeling.tiny import save_tiny_backbone

WORDS = ["drill", "screw", "tape", "glove", "clamp", "saw", "bolt", "nut", "wire", "lamp", "fan", "hook"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, str]:
    """12 items, 10 users with 7-9 purchases (so CoT targets exist), a 2-level index, a tiny backbone."""
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    items = {
        str(i): {"title": f"{w.title()} model {i}", "description": f"A sturdy {w} for the workshop."}
        for i, w in enumerate(WORDS)
    }
    inter = {f"u{u}": [int(x) for x in rng.permutation(12)[: int(rng.integers(7, 10))]] for u in range(10)}
    (data / "Toy.item.json").write_text(json.dumps(items))
    (data / "Toy.inter.json").write_text(json.dumps(inter))
    SemanticIndex(np.array([[i % 4, i // 4] for i in range(12)]), [4, 3]).to_json(root / "Toy.index.json")
    return {
        "data_dir": str(data),
        "index_path": str(root / "Toy.index.json"),
        "backbone": save_tiny_backbone(root / "tiny", hidden_size=32),
    }


def make(toy: dict[str, str], **kwargs) -> CurriculumDataModule:
    # byte-level toy tokenizer: a CoT sample with its system prompt is ~1.5k tokens
    args = {"teacher": {"kind": "template"}, "batch_size": 4, "val_users": 3, "max_length": 4096, **toy, **kwargs}
    dm = CurriculumDataModule(**args)
    dm.setup("fit")
    return dm


def kinds(dm: CurriculumDataModule) -> list[str]:
    return [r["kind"] for r in dm.train_data]


def staged_cot_rows(n: int, batch: int) -> int:
    """3 stages: none, the first half of the reasoning batches, all of them."""
    first_half = min(n, round(-(-n // batch) / 2) * batch)
    return first_half + n


@pytest.mark.parametrize(
    ("schedule", "cot_rows"),
    [("official", lambda n, b: 3 * n), ("staged", staged_cot_rows), ("none", lambda n, b: 2 * n)],
)
def test_counts_by_schedule(toy, schedule, cot_rows):
    dm = make(toy, schedule=schedule, **({"reason_passes": 2} if schedule == "none" else {}))
    c = dm.counts
    assert c["align_samples"] > 0 and c["cot_samples"] == 14
    assert kinds(dm).count("align") == c["align_samples"]  # every alignment sample exactly once
    assert c["stream_cot_rows"] == kinds(dm).count("cot") == cot_rows(14, dm.batch_size)
    assert c["stream_rows"] == len(dm.train_data)


def test_official_curriculum_starts_with_alignment_and_the_loader_keeps_the_order(toy):
    dm = make(toy)
    assert kinds(dm)[: dm.batch_size] == ["align"] * dm.batch_size  # p_0 = 0: no reasoning batch first
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, SequentialDistributedSampler)
    assert list(loader.sampler) == list(range(len(dm.train_data)))
    first = [b["input_ids"] for b in loader]
    again = [b["input_ids"] for b in dm.train_dataloader()]
    assert all((a == b).all() for a, b in zip(first, again))
    expected = dm.train_data[: dm.batch_size]
    width = max(len(r["input_ids"]) for r in expected)
    assert first[0].shape == (dm.batch_size, width)
    assert first[0][1, : len(expected[1]["input_ids"])].tolist() == expected[1]["input_ids"]


def test_cot_off_is_alignment_only_without_a_teacher(toy):
    dm = make(toy, cot=False, teacher=None)
    assert set(kinds(dm)) == {"align"} and dm.counts["cot_samples"] == 0


def test_cot_from_file_and_source_errors(toy, tmp_path):
    generated = make(toy, cot_out=str(tmp_path / "cot.jsonl"))
    assert (tmp_path / "cot.jsonl.stats.json").is_file()
    loaded = make(toy, teacher=None, cot_path=str(tmp_path / "cot.jsonl"))
    assert loaded.counts == generated.counts
    with pytest.raises(ValueError, match="exactly one CoT source"):
        CurriculumDataModule(**toy)
    with pytest.raises(ValueError, match="unknown curriculum schedule"):
        CurriculumDataModule(**toy, teacher={"kind": "template"}, schedule="random")
    with pytest.raises(ValueError, match=r"every CoT sample is longer than max_length=256 .* needs \d{3,} tokens"):
        make(toy, max_length=256)


def test_a_teacher_with_no_usable_answer_says_so_not_max_length(toy, monkeypatch):
    from types import SimpleNamespace

    import gream_lit.curriculum.curriculum_data as curriculum_data

    monkeypatch.setattr(
        curriculum_data, "build_cot_dataset", lambda *a, **k: ([], SimpleNamespace(dropped={"empty_steps": 8}))
    )
    with pytest.raises(ValueError, match=r"wrote no usable chain-of-thought sample \(filtered: \{'empty_steps': 8\}\)"):
        make(toy)


def test_reasoning_eval_prompts_carry_the_reasoning_system_prompt(toy):
    dm = make(toy, eval_mode="reasoning")
    text = dm.tokenizer.decode(dm.eval_data["valid"][0]["input_ids"])
    assert REASONING_SYSTEM_PROMPT in text and text.endswith("<|im_start|>assistant\n")


def test_cli_fit_tiny_curriculum_with_reasoning_eval(toy, tmp_path, capsys):
    config = compose_file(Path(__file__).parents[1] / "experiments" / "curriculum_tiny.yaml")
    config["data"]["init_args"].update(toy, max_length=4096, cot_max_samples=None, tasks=None)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "tb")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["fit", "--config", str(path), "--trainer.default_root_dir", str(run)]) == 0
    out = capsys.readouterr().out
    for key in ("curriculum/test/recall@10", "curriculum/test/parse_rate", "curriculum/test/answer_rate"):
        assert key in out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = []
    for events in (tmp_path / "tb").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        tags += acc.Tags()["tensors"]
    assert any(tag.startswith("curriculum/test/reasoning_") for tag in tags)
    (per_user,) = (tmp_path / "tb").rglob("test_per_user.jsonl")  # reasoning-mode rankings, one row per user
    rows = [json.loads(line) for line in per_user.read_text().splitlines()]
    assert rows and all(len(r["items"]) <= 10 and r["rank"] < len(r["items"]) for r in rows)


def test_compact_curriculum_keeps_cot_in_chat_and_dense_rows_compact(toy):
    off = {t: {"enabled": False} for t in ("seqrec", "item2index", "index2item", "fusionseqrec")}
    dm = make(toy, prompt_format="compact", tasks={"seqdense": {"enabled": True}, **off})
    prefix = dm.tokenizer("History:", add_special_tokens=False)["input_ids"]
    align = [r for r in dm.train_data if r["kind"] == "align"]
    cot = [r for r in dm.train_data if r["kind"] == "cot"]
    assert len(align) == dm.catalog.n_users and cot
    assert all(r["input_ids"][: len(prefix)] == prefix for r in align)
    assert all("<|im_start|>" in dm.tokenizer.decode(r["input_ids"]) for r in cot)
    assert dm.eval_data["valid"][0]["input_ids"][: len(prefix)] == prefix  # direct eval: compact
    reasoning = make(toy, prompt_format="compact", eval_mode="reasoning", tasks={"seqdense": {"enabled": True}, **off})
    assert REASONING_SYSTEM_PROMPT in reasoning.tokenizer.decode(reasoning.eval_data["valid"][0]["input_ids"])


def test_compact_curriculum_trains_ids_vocab_with_text_cot_batches(toy, tmp_path):
    """Dense rows train over the ID tokens, CoT batches (text targets) over the whole vocabulary:
    without the batch flag the ID-vocabulary loss rejects the CoT labels."""
    off = {t: {"enabled": False} for t in ("seqrec", "item2index", "index2item", "fusionseqrec")}
    dm = make(toy, prompt_format="compact", tasks={"seqdense": {"enabled": True}, **off})
    flags = [batch["full_vocab"] for batch in dm.train_dataloader()]
    expected = [any(r["kind"] == "cot" for r in dm.train_data[i : i + 4]) for i in range(0, len(dm.train_data), 4)]
    assert flags == expected and set(flags) == {True, False}

    config = compose_file(Path(__file__).parents[1] / "experiments" / "curriculum_tiny.yaml")
    config["trainer"].update(limit_train_batches=None, logger=False, limit_val_batches=0, limit_test_batches=1)
    config["model"]["init_args"].update(logits_vocab="ids", checkpoint_tokens=64)
    config["data"]["init_args"].update(
        toy,
        max_length=4096,
        cot_max_samples=None,
        prompt_format="compact",
        eval_mode="direct",
        tasks={"seqdense": {"enabled": True}, **off},
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "run")]) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"reason_passes": 1}, "schedule: none only"), ({"n_stages": 2, "schedule": "none"}, "schedule: staged only")],
)
def test_a_schedule_argument_the_schedule_ignores_is_refused(toy, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CurriculumDataModule(teacher={"kind": "template"}, **toy, **kwargs)
