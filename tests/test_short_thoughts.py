"""Short thoughts: written from the visible history only, checked for grounding, trained in the compact
layout, decoded with a think budget and a forced close, then the same constrained search."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_curriculum_data import make, toy  # noqa: F401  (the toy catalogue fixture)

from gream_lit.data.catalog import Catalog
from gream_lit.data.short_thoughts import ThoughtWriter, hierarchical, short_row, think_block
from gream_lit.experiment.cli import main
from gream_lit.experiment.composition import compose_file
from gream_lit.inference.reasoning import ReasoningOptions, cut_at_answer

MOVIES = [
    {"title": "Toy Story", "categories": "Animation, Children's, Comedy"},
    {"title": "Heat", "categories": "Action, Crime, Thriller"},
    {"title": "Clueless", "categories": "Comedy, Romance"},
    {"title": "Alien", "categories": "Horror, Sci-Fi"},
]


def movies() -> Catalog:
    return Catalog("toy", [[0, 1, 2, 3]], MOVIES, [str(i) for i in range(4)], ["u0"])


def test_flat_genres_name_every_kind_recent_first_then_the_most_frequent():
    writer = ThoughtWriter(movies(), recent=2, top=2)
    assert not hierarchical(MOVIES)
    # the 2 most recent items' kinds (newest first), cut to 2; then the 2 most frequent, ties in history order
    assert writer.thought([0, 1, 2]) == "Recently Comedy and Romance; mostly Comedy and Animation."
    assert writer.thought([3, 1]) == "Recently Action and Crime; mostly Horror and Sci-Fi."


def test_hierarchies_name_their_leaf_and_titles_only_catalogues_their_rare_words():
    tree = [{"title": "A", "categories": "Root, Tools, Drills"}, {"title": "B", "categories": "Root, Tools, Saws"}]
    writer = ThoughtWriter(Catalog("t", [[0, 1]], tree, ["0", "1"], ["u"]))
    assert hierarchical(tree) and writer.thought([0, 1]) == "Recently Saws and Drills; mostly Drills and Saws."
    titles = [{"title": "Cordless drill"}, {"title": "Hand saw"}] + [{"title": f"Paint roller {k}"} for k in range(9)]
    ids = [str(i) for i in range(11)]
    words = ThoughtWriter(Catalog("t", [list(range(11))], titles, ids, ["u"]), top=1)
    assert words.thought([0]) == "Recently Cordless and Drill; mostly Cordless."


def test_code_thoughts_name_the_first_id_tokens_of_the_history():
    codes = ["<a_1>", "<a_2>", "<a_1>", "<a_3>"]
    writer = ThoughtWriter(movies(), "codes", recent=2, top=2, first_codes=codes)
    assert writer.thought([0, 1, 2]) == "Recently <a_1> and <a_2>; mostly <a_1> and <a_2>."
    assert writer.grounded("Recently <a_3>; mostly <a_3>.", [3])
    assert not writer.grounded("Recently <a_3>; mostly <a_1>.", [3])
    assert writer.grounded("<think>Recently <a_3>.</think><a_1><b_2>", [3])  # the answer is no part of the thought
    with pytest.raises(ValueError, match="first_codes"):
        ThoughtWriter(movies(), "codes")


def test_a_thought_is_grounded_only_when_every_kind_it_names_is_in_the_history():
    writer = ThoughtWriter(movies())
    assert writer.grounded("Recently Comedy; mostly Romance.", [2])
    assert not writer.grounded("Recently Comedy; mostly Horror.", [2])  # Horror is not in the history
    assert not writer.grounded("Recently , and ; mostly", [2])  # names nothing
    assert writer.named("mostly Sci-Fi and Children's") == ["Sci-Fi", "Children's"]


def test_short_row_trains_the_think_block_and_the_id_only():
    row = short_row([1, 2, 3], [7, 8], [9, 10])
    assert row == {"input_ids": [1, 2, 3, 7, 8, 9, 10], "labels": [-100, -100, -100, 7, 8, 9, 10]}
    assert think_block("x") == "<think>x</think>"


def test_the_short_layout_stops_at_the_think_close_and_closes_it_where_the_model_did_not():
    opts = ReasoningOptions(layout="short", max_new_tokens=8)
    assert (opts.think_prefix, opts.forced_answer, opts.answer_open) == ("<think>", "</think>", "</think>")
    assert cut_at_answer("Recently Comedy.</think><|a_1|>", opts.forced_answer, opts.answer_open) == (
        "Recently Comedy.</think>",
        True,
    )
    assert cut_at_answer("Recently Com", opts.forced_answer, opts.answer_open) == ("Recently Com</think>", False)
    with pytest.raises(ValueError, match="constrained decoder only"):
        ReasoningOptions(layout="short", decoder="sample_rank")


def short_dm(toy, **kwargs):  # noqa: F811
    off = {t: {"enabled": False} for t in ("seqrec", "item2index", "index2item", "fusionseqrec")}
    return make(
        toy,
        teacher=None,
        cot_layout="short",
        prompt_format="compact",
        max_length=512,
        tasks={"seqdense": {"enabled": True}, **off},
        **kwargs,
    )


def test_short_rows_are_written_from_the_visible_history_never_from_the_target(toy):  # noqa: F811
    dm = short_dm(toy, short_per_user=2, eval_mode="reasoning")
    cot = [r for r in dm.train_data if r["kind"] == "cot"]
    assert dm.counts["cot_samples"] == 2 * dm.catalog.n_users
    by_user = {}
    for s in dm.split.train:
        by_user.setdefault(s.user, []).append(s)
    expected = [s for samples in by_user.values() for s in samples[-2:]]
    rows = dm.item_rows()
    for sample in expected:
        think = dm.tokenizer(think_block(dm.thought_writer.thought(sample.history)), add_special_tokens=False)
        target = think["input_ids"] + rows[sample.target]
        assert any(r["input_ids"][-len(target) :] == target and r["labels"][-len(target) :] == target for r in cot)
    prefix = dm.tokenizer("History:", add_special_tokens=False)["input_ids"]
    assert dm.eval_data["valid"][0]["input_ids"][: len(prefix)] == prefix  # reasoning prompt = direct prompt


def test_code_thought_rows_name_the_index_first_tokens_as_single_tokens(toy):  # noqa: F811
    dm = short_dm(toy, thought_source="codes")
    first = {dm.index.item_tokens(i)[0] for i in range(dm.catalog.n_items)}
    first_ids = {dm.tokenizer.convert_tokens_to_ids(t) for t in first}
    sample = [s for s in dm.split.train if s.history][-1]
    thought = dm.thought_writer.thought(sample.history)
    assert dm.index.item_tokens(sample.history[-1])[0] in thought
    assert set(dm.thought_writer.named(thought)) <= first
    think = dm.tokenizer(think_block(thought), add_special_tokens=False)["input_ids"]
    assert first_ids & set(think)  # an ID token of the vocabulary, not its characters
    assert dm.thought_writer.grounded(dm.tokenizer.decode(think), sample.history)


def test_the_short_layout_refuses_a_teacher_and_the_chat_format(toy):  # noqa: F811
    with pytest.raises(ValueError, match="drop cot_path and teacher"):
        make(toy, cot_layout="short", prompt_format="compact")
    with pytest.raises(ValueError, match="prompt_format: compact"):
        make(toy, cot_layout="short", teacher=None)


def _short_data_config(data_paths: dict, tmp_path: Path, model_args: dict) -> Path:
    """The tiny curriculum on short-layout data (seqdense rows only), written to a YAML file."""
    off = {t: {"enabled": False} for t in ("seqrec", "item2index", "index2item", "fusionseqrec")}
    config = compose_file(Path(__file__).parents[1] / "experiments" / "curriculum_tiny.yaml")
    config["trainer"].update(logger=False, limit_val_batches=0)
    config["model"]["init_args"].update(model_args)
    config["data"]["init_args"].update(
        data_paths,
        teacher=None,
        cot_layout="short",
        max_length=512,
        cot_max_samples=None,
        prompt_format="compact",
        tasks={"seqdense": {"enabled": True}, **off},
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_fit_tiny_short_curriculum_reports_closing_grounding_distinct_answers_and_speed(toy, tmp_path, capsys):  # noqa: F811
    path = _short_data_config(
        toy, tmp_path, {"logits_vocab": "ids", "reasoning": {"layout": "short", "max_new_tokens": 12}}
    )
    assert main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    for key in ("answer_rate", "grounded_rate", "distinct_top1", "users_per_s", "recall@10"):
        assert f"curriculum/test/{key}" in out


def test_a_reasoning_layout_that_differs_from_the_data_is_refused(toy, tmp_path):  # noqa: F811
    path = _short_data_config(toy, tmp_path, {})
    with pytest.raises(ValueError, match="reasoning.layout: short"):
        main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "run")])
