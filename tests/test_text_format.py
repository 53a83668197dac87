"""The shared text format: every chain-of-thought target the curriculum writes parses back to its item,
under the evaluation's parser and under the RL reward's parser alike."""

from __future__ import annotations

import random

from gream_lit.data.text_format import format_response, parse_reasoning
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
