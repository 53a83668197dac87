"""The text format every phase shares: chat prompts, item-history layout, the reasoning answer layout and
its parser.

Alignment samples (``alignment.tasks``), chain-of-thought targets (``curriculum.cot``), RL prompts
(``rl.rl_data``) and reasoning-mode evaluation (``inference.reasoning``) all write and read through these
definitions, so a target the curriculum writes is what the evaluation parses. The compact ID layout lives
beside it in ``compact_format``; the instruction templates in ``templates``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from gream_lit.data.templates import SEQREC

SYSTEM_PROMPT = "You are a helpful assistant."
HISTORY_SEP = ", "

REASONING_SYSTEM_PROMPT = """You are a recommender that thinks before it answers. Study the user's purchase \
history and recommend the item they are most likely to buy next.

Answer in this format:
<think>
Step 1: Analyze the purchase history - what the items are and which patterns, categories and trends they show.
Step 2: Build user preferences - what this user cares about.
Step 3: Uncover purchase intent - what the user most likely needs next, given the history and preferences.
</think>
Then rewrite the purchase history keeping only the items relevant to that intent, and give the recommended \
item inside <answer> </answer> tags."""

REASONING_TEMPLATES = [text for _, text in SEQREC]
REASONING_EVAL_TEMPLATE = REASONING_TEMPLATES[0]
REWRITE_INTRO = "Let's rewrite user's purchase history: "
ANSWER_INTRO = "Based on the above analysis, the recommended product is "
PARSE_FAILURES = ("unclosed_think", "no_answer", "answer_not_id", "answer_unclosed")

_ID_TOKEN = r"<\|[a-z]_\d+\|>|<[a-z]_\d+>"
_ID_RE = re.compile(_ID_TOKEN)
_SID_RE = re.compile(f"(?:{_ID_TOKEN})+")
_REWRITE_RE = re.compile(re.escape(REWRITE_INTRO.strip()) + r"\s*([^\n]*)", re.IGNORECASE)
_ANSWER_RE = re.compile(r"<answer>(.*?)(</answer>|$)", re.DOTALL)


@dataclass(frozen=True)
class TaskSample:
    """One instruction/answer pair; ``template`` is formatted with ``history`` and ``fields``."""

    task: str
    template: str
    history: tuple[str, ...]
    response: str
    fields: dict[str, str] = field(default_factory=dict)

    def prompt(self, drop: int = 0) -> str:
        """The user turn with the ``drop`` oldest history items left out."""
        return self.template.format(history=HISTORY_SEP.join(self.history[drop:]), **self.fields)

    def response_for(self, drop: int = 0) -> str:
        """The answer to the prompt without the ``drop`` oldest history items (the same answer here;
        a reasoning sample also leaves them out of its rewritten history)."""
        return self.response

    def messages(self, system: str | None = SYSTEM_PROMPT, drop: int = 0) -> list[dict[str, str]]:
        head = [{"role": "system", "content": system}] if system is not None else []
        return head + [
            {"role": "user", "content": self.prompt(drop)},
            {"role": "assistant", "content": self.response_for(drop)},
        ]


def format_response(reasoning: str, rewrite: Sequence[str], target: str) -> str:
    """The exact assistant layout of docs/gream_spec.md §5.2 with our (possibly denoised) rewrite."""
    return (
        f"<think>\n{reasoning}\n</think>\n\n"
        f"{REWRITE_INTRO}{HISTORY_SEP.join(rewrite)}.\n\n"
        f"{ANSWER_INTRO}<answer>{target}</answer>"
    )


@dataclass(frozen=True)
class ParsedReasoning:
    """A reasoning-mode output split into its parts.

    ``think`` is None when ``</think>`` is missing; ``rewrite`` holds the rewritten history's IDs;
    ``answer_tokens`` the ID tokens right after the first ``<answer>`` (as the official regex reads
    them). ``ok``: the think block is closed and the answer tag is closed around ID tokens only;
    ``failure`` names the first rule a failed output breaks (one of ``PARSE_FAILURES``), None when ok.
    """

    think: str | None
    rewrite: list[str]
    answer_tokens: list[str]
    ok: bool
    failure: str | None = None

    @property
    def answer(self) -> str:
        return "".join(self.answer_tokens)


def parse_reasoning(text: str) -> ParsedReasoning:
    """Parse a generation; the leading ``<think>`` may be absent (evaluation forces it into the prompt)."""
    think = None
    rest = text
    if "</think>" in text:
        head, _, rest = text.partition("</think>")
        think = head.split("<think>", 1)[-1].strip()
    m = _REWRITE_RE.search(rest)
    rewrite = []
    if m:
        line = m.group(1).split("<answer>")[0].rstrip().rstrip(".")
        rewrite = [part.strip() for part in line.split(",") if _SID_RE.fullmatch(part.strip())]
    answer_tokens: list[str] = []
    clean_id = False
    a = _ANSWER_RE.search(rest)
    if a:
        inner = a.group(1).strip()
        lead = _SID_RE.match(inner)
        answer_tokens = _ID_RE.findall(lead.group(0)) if lead else []
        clean_id = bool(lead) and lead.group(0) == inner
    if think is None:
        failure = "unclosed_think"
    elif not a:
        failure = "no_answer"
    elif not a.group(2):
        failure = "answer_unclosed"
    elif not clean_id:
        failure = "answer_not_id"
    else:
        failure = None
    return ParsedReasoning(think, rewrite, answer_tokens, failure is None, failure)


def visible_rewrite(history: Sequence[str], rewrite: Sequence[str], drop: int) -> list[str]:
    """The rewritten history a prompt without the ``drop`` oldest ``history`` items can justify.

    ``rewrite`` is a subsequence of ``history`` (the denoised rewrite keeps order); its entries matched to
    dropped positions go. Entries that match no history item stay. When nothing visible is left, the whole
    visible history is the rewrite, the denoising rule for an intent that matches no item."""
    kept, pos = [], 0
    for sid in rewrite:
        at = next((i for i in range(pos, len(history)) if history[i] == sid), None)
        if at is None:
            kept.append(sid)
            continue
        pos = at + 1
        if at >= drop:
            kept.append(sid)
    return kept or list(history[drop:])


def replace_rewrite(response: str, rewrite: Sequence[str]) -> str:
    """``response`` with the IDs of its rewritten history replaced by ``rewrite``; every other character
    is kept. A response without a rewrite line is returned unchanged."""
    m = _REWRITE_RE.search(response, max(response.find("</think>"), 0))
    if m is None:
        return response
    line = m.group(1).split("<answer>")[0].rstrip().rstrip(".")
    start = m.start(1)
    return response[:start] + HISTORY_SEP.join(rewrite) + response[start + len(line) :]
