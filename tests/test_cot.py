"""CoT samples: Step-4 cut, filters and their counts, denoised rewrite, parsing, readers, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gream_lit.curriculum.cot import (
    CotBuilder,
    CotStats,
    build_cot_dataset,
    cot_targets,
    denoise,
    empty_steps,
    load_cot_samples,
    missing_steps,
    plain_words,
    step_text,
    strip_step4,
    title_leaked,
)
from gream_lit.curriculum.teachers import CachedTeacher, Teacher, TemplateTeacher
from gream_lit.curriculum.teachers.prompts import COT_SYSTEM_PROMPT
from gream_lit.data.catalog import Catalog, DataError
from gream_lit.data.semantic_index import SemanticIndex
from gream_lit.data.split import Sample
from gream_lit.data.text_format import REASONING_SYSTEM_PROMPT, format_response, parse_reasoning
from gream_lit.experiment.cli import main as cli_main

STEPS = "Step 1: they buy staples. Step 2: they like fasteners. Step 3: they need screws next."
FULL = (
    "Step 1: Bought Stanley steel staples, then a Kreg wood screw kit. "
    "Step 2: Prefers sturdy metal fasteners from known brands like Stanley. "
    "Step 3: Likely building a wooden deck soon, so needs exterior screws."
)


def tiny_catalog() -> Catalog:
    cats = ["Lab,Fasteners,Staples", "Lab,Fasteners,Screws", "Lab,Printing,Filament", "Lab,Printing,Nozzles"]
    words = ["steel staple", "wood screw", "pla filament", "brass nozzle",
             "narrow staple", "deck screw", "petg filament", "steel nozzle"]  # fmt: skip
    items = [
        {"title": f"{w} model {i}", "brand": "Acme", "categories": cats[i % 4], "description": f"about {w}"}
        for i, w in enumerate(words)
    ]
    seqs = [[0, 1, 4, 5, 2, 3, 6, 7], [2, 3, 6, 7, 0, 1, 4], [1, 5, 0]]
    return Catalog("tiny", seqs, items, [str(i) for i in range(8)], ["u0", "u1", "u2"])


def tiny_index() -> SemanticIndex:
    return SemanticIndex(codes=np.array([[i // 4, i % 4] for i in range(8)]), codebook_sizes=[2, 4])


class Scripted(Teacher):
    """Answers each request with the next scripted text."""

    def __init__(self, answers):
        self.answers = list(answers)

    @property
    def teacher_id(self):
        return "scripted"

    def complete(self, messages):
        return self.answers.pop(0)


def test_strip_step4_cuts_at_last_dot_before_step4():
    assert strip_step4(STEPS + " Step 4: buy deck screw.") == STEPS
    assert strip_step4("Step 1: a. Step 2: b. **Step 4** x. Step 4 again") == "Step 1: a. Step 2: b. **Step 4** x."
    assert strip_step4(STEPS) is None


def test_empty_steps_flag_format_echoes():
    echo = "Step 1: Analyze the purchase history of the customer.\n\nStep 2: Build user preferences.\n\nStep 3: x."
    assert empty_steps(echo) == [1, 2, 3]
    assert empty_steps(FULL) == [] and empty_steps(FULL, min_words=10) == [2]  # Step 2 has 9 words
    echo_with_gloss = "Step 1: Analyze - what the customer cares about and which trends show. Step 2: b. Step 3: c."
    assert empty_steps(echo_with_gloss) == [2, 3]
    assert empty_steps(echo_with_gloss, ignore=frozenset(plain_words(COT_SYSTEM_PROMPT))) == [1, 2, 3]


def test_missing_steps_and_step_text():
    assert missing_steps(STEPS) == [] and missing_steps("Step 1: a. step 3: c.") == [2]
    assert step_text(STEPS, 3) == "Step 3: they need screws next."
    assert step_text(STEPS, 2) == "Step 2: they like fasteners. "


def test_title_leak_full_and_ngram():
    title = "Stanley TRA708SST 1/2-Inch HD Stainless Steel Narrow Crown Staple."
    assert title_leaked("They will buy the stanley tra708sst 1/2-inch hd stainless steel narrow crown staple!", title)
    assert title_leaked("likely HD Stainless Steel Narrow Crown Staple packs", title)  # 6 consecutive words
    assert not title_leaked("stainless steel staples from Stanley", title)
    assert not title_leaked("a hat", "Hat")  # one-word titles are not judged


def test_denoise_keeps_order_and_never_empties():
    words = [{"staple", "steel"}, {"filament"}, {"screw", "wood"}, {"nozzle", "steel"}]
    assert denoise(words, {"screw", "steel"}) == [0, 2, 3]
    assert denoise(words, {"screw", "steel"}, min_overlap=2) == [0, 1, 2, 3]  # nothing qualifies: keep all
    assert denoise(words, {"filament"}) == [1]


def test_response_layout_and_parse_roundtrip():
    text = format_response("Step 1: a.", ["<|a_1|><|b_2|>", "<|a_3|><|b_4|>"], "<|a_5|><|b_6|>")
    assert text == (
        "<think>\nStep 1: a.\n</think>\n\nLet's rewrite user's purchase history: <|a_1|><|b_2|>, <|a_3|><|b_4|>.\n\n"
        "Based on the above analysis, the recommended product is <answer><|a_5|><|b_6|></answer>"
    )
    p = parse_reasoning(text)
    assert p.ok and p.think == "Step 1: a." and p.rewrite == ["<|a_1|><|b_2|>", "<|a_3|><|b_4|>"]
    assert p.answer_tokens == ["<|a_5|>", "<|b_6|>"] and p.answer == "<|a_5|><|b_6|>"
    forced = parse_reasoning(text.removeprefix("<think>\n"))  # evaluation puts "<think>\n" in the prompt
    assert forced.ok and forced.think == "Step 1: a."


@pytest.mark.parametrize(
    "text, failure, answer",
    [
        ("Step 1 </think> <answer><a_1><b_2></answer>", None, ["<a_1>", "<b_2>"]),  # LC-Rec style tokens
        ("<think>no close <answer><|a_1|></answer>", "unclosed_think", ["<|a_1|>"]),
        ("</think> <answer><|a_1|> maybe</answer>", "answer_not_id", ["<|a_1|>"]),
        ("</think> <answer>shoes</answer>", "answer_not_id", []),
        ("</think> <answer><|a_1|><|b_2|>", "answer_unclosed", ["<|a_1|>", "<|b_2|>"]),  # official regex still reads it
        ("</think> the answer is shoes", "no_answer", []),
    ],
)
def test_parse_malformed(text, failure, answer):
    p = parse_reasoning(text)
    assert p.failure == failure and p.ok is (failure is None) and p.answer_tokens == answer


def test_cot_targets_follow_spec():
    samples = cot_targets(tiny_catalog())
    # u0: trimmed = 6 items -> targets at t = 4, 5; u1: trimmed = 5 -> t = 4; u2: none.
    assert samples == [Sample(0, (0, 1, 4, 5), 2), Sample(0, (0, 1, 4, 5, 2), 3), Sample(1, (2, 3, 6, 7), 0)]


def test_filters_are_counted():
    cat, idx = tiny_catalog(), tiny_index()
    builder = CotBuilder(cat, idx, max_response_chars=400, max_df=0.6)
    stats = CotStats()
    s = Sample(0, (0, 1, 4, 5), 2)  # target: "pla filament model 2", ID <|a_1|><|b_3|>
    answers = [
        "Step 1: a. Step 3: c. Step 4: d.",
        f"{FULL} Buy {idx.item_string(2)}. Step 4: d.",
        f"{FULL} Buy the PLA filament model 2. Step 4: d.",
        f"{FULL} " + "long " * 100 + ". Step 4: d.",
        FULL,
        STEPS + " Step 4: d.",
        f"{FULL} Step 4: d.",
    ]
    built = [builder.build(s, a, "t", stats) for a in answers]
    assert stats.dropped == {"missing_step": 2, "empty_step": 1, "leaked_id": 1, "leaked_title": 1, "too_long": 1}
    assert stats.requested == 7 and stats.kept == 1 and built[-1] is not None
    assert built[-1].kept_items == (1, 5)  # only the screws match the Step 3 intent
    assert stats.dropped_items == 2 and stats.denoised_samples == 1


def test_build_dataset_writes_resumable_jsonl(tmp_path):
    cat, idx = tiny_catalog(), tiny_index()
    cache, out = tmp_path / "cache.jsonl", tmp_path / "cot.jsonl"
    teacher = CachedTeacher(TemplateTeacher.from_catalog(cat, max_df=0.6), cache)
    samples, stats = build_cot_dataset(cat, idx, teacher, out=out, max_df=0.6)
    assert stats.requested == 3 and stats.kept == len(samples) == 3 and teacher.misses == 3
    assert json.loads((tmp_path / "cot.jsonl.stats.json").read_text())["kept"] == 3
    assert load_cot_samples(out) == samples
    again = CachedTeacher(TemplateTeacher.from_catalog(cat, max_df=0.6), cache)
    build_cot_dataset(cat, idx, again, max_df=0.6)
    assert again.hits == 3 and again.misses == 0
    msgs = samples[0].messages()
    assert msgs[0]["content"] == REASONING_SYSTEM_PROMPT and idx.item_string(0) in msgs[1]["content"]
    assert idx.item_string(0) not in samples[0].messages(drop=1)[1]["content"]
    assert parse_reasoning(msgs[2]["content"]).answer == idx.item_string(2)


def test_copy_rewrite_keeps_history():
    cat, idx = tiny_catalog(), tiny_index()
    teacher = TemplateTeacher.from_catalog(cat, max_df=0.6)
    samples, stats = build_cot_dataset(cat, idx, teacher, rewrite="copy", max_df=0.6)
    assert all(s.kept_items == s.history_items for s in samples) and stats.dropped_items == 0
    with pytest.raises(ValueError, match="rewrite must be one of"):
        CotBuilder(cat, idx, rewrite="shuffle")


def sharegpt_rows():
    return [
        {
            "conversations": [
                {"from": "human", "value": "History {x}: <a_1>"},
                {"from": "gpt", "value": "<think>\nS\n</think>"},
            ],
            "system": "official system",
        }
    ]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_read_official_sharegpt(tmp_path, suffix):
    path = tmp_path / f"Instruments-mix{suffix}"
    rows = sharegpt_rows()
    if suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows))
    (s,) = load_cot_samples(path)
    assert s.messages() == [
        {"role": "system", "content": "official system"},
        {"role": "user", "content": "History {x}: <a_1>"},
        {"role": "assistant", "content": "<think>\nS\n</think>"},
    ]


def test_reader_errors_name_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    bad = {"conversations": [{"from": "gpt", "value": "x"}]}
    path.write_text(json.dumps(sharegpt_rows()[0]) + "\n" + json.dumps(bad))
    with pytest.raises(DataError, match=r"bad.jsonl: row 2: conversations must be"):
        load_cot_samples(path)


def test_cli_teacher_cot_and_side_info(tmp_path, capsys):
    cat, idx = tiny_catalog(), tiny_index()
    data = tmp_path / "tiny"
    data.mkdir()
    (data / "tiny.inter.json").write_text(json.dumps({u: s for u, s in zip(cat.user_ids, cat.sequences)}))
    (data / "tiny.item.json").write_text(json.dumps({str(i): it for i, it in enumerate(cat.items)}))
    idx.to_json(tmp_path / "tiny.index.json")
    out = tmp_path / "cot.jsonl"
    args = ["teacher", "cot", "--data", str(data), "--index", str(tmp_path / "tiny.index.json"), "--out", str(out)]
    assert cli_main(args + ["--teacher_arg", "max_df=0.6", "--rewrite", "copy"]) == 0
    assert json.loads(capsys.readouterr().out)["requested"] == 3 and len(load_cot_samples(out)) == 3
    user_json = tmp_path / "tiny.user.json"
    assert cli_main(["teacher", "side-info", "--data", str(data), "--out", str(user_json)]) == 0
    assert set(json.loads(user_json.read_text())["user_explicit_preference"]) == {"u0", "u1"}
