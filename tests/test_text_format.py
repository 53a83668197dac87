"""The shared text format: every chain-of-thought target the curriculum writes parses back to its item,
under the evaluation's parser and under the RL reward's parser alike."""

from __future__ import annotations

import random

from gream_lit.data.text_format import format_response, parse_reasoning, replace_rewrite, visible_rewrite
from gream_lit.rl.rewards import parse_answer

WORDS = [
    "Step",
    "1:",
    "2:",
    "3:",
    "buys",
    "screws",
    "for",
    "a",
    "deck,",
    "then",
    "glue.",
    "<",
    ">",
    "answer",
    "think",
    "\n",
]


def random_sid(rng: random.Random, style: str) -> str:
    levels = rng.randint(3, 5)
    if style == "gream":
        return "".join(f"<|{chr(97 + lv)}_{rng.randint(1, 256)}|>" for lv in range(levels))
    return "".join(f"<{chr(97 + lv)}_{rng.randint(0, 255)}>" for lv in range(levels))


def test_every_written_target_parses_back_to_its_item_under_both_parsers() -> None:
    rng = random.Random(0)
    for _ in range(500):
        style = rng.choice(["gream", "lcrec"])
        reasoning = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40)))
        rewrite = [random_sid(rng, style) for _ in range(rng.randint(0, 6))]
        target = random_sid(rng, style)
        text = format_response(reasoning, rewrite, target)
        parsed = parse_reasoning(text)
        assert parsed.ok and parsed.answer == target, text
        assert parsed.rewrite == rewrite
        assert parse_answer(text, "reason") == target, text


def test_visible_rewrite_keeps_only_items_the_shortened_prompt_shows() -> None:
    history = ("<a_1><b_1>", "<a_2><b_2>", "<a_1><b_1>", "<a_3><b_3>")
    # the rewrite kept positions 0, 2 and 3 (the repeated item matched in order, not at its first sight)
    rewrite = ["<a_1><b_1>", "<a_1><b_1>", "<a_3><b_3>"]
    assert visible_rewrite(history, rewrite, 0) == rewrite
    assert visible_rewrite(history, rewrite, 1) == ["<a_1><b_1>", "<a_3><b_3>"]
    assert visible_rewrite(history, rewrite, 3) == ["<a_3><b_3>"]
    # nothing of the rewrite left visible: the whole visible history, the denoising fallback
    assert visible_rewrite(history, ["<a_2><b_2>"], 2) == ["<a_1><b_1>", "<a_3><b_3>"]
    # an entry that matches no history item is not the prompt's to drop
    assert visible_rewrite(history, ["<a_9><b_9>", "<a_3><b_3>"], 3) == ["<a_9><b_9>", "<a_3><b_3>"]


def test_replace_rewrite_changes_the_rewrite_ids_and_nothing_else() -> None:
    response = format_response("Step 1: a.\nStep 2: b.\nStep 3: c.", ["<a_1><b_1>", "<a_2><b_2>"], "<a_5><b_5>")
    out = replace_rewrite(response, ["<a_2><b_2>"])
    assert out == format_response("Step 1: a.\nStep 2: b.\nStep 3: c.", ["<a_2><b_2>"], "<a_5><b_5>")
    parsed = parse_reasoning(out)
    assert parsed.ok and parsed.rewrite == ["<a_2><b_2>"] and parsed.answer == "<a_5><b_5>"
    assert replace_rewrite("<think>x</think> <answer><a_1></answer>", ["<a_2>"]) == (
        "<think>x</think> <answer><a_1></answer>"
    )
