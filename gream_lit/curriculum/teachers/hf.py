"""A local Hugging Face causal LM as teacher (SmolLM2-135M-Instruct by default), via ``generate``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from gream_lit.curriculum.teachers.base import Messages, ResultCallback, Teacher, validate_messages
from gream_lit.curriculum.teachers.prompts import COT_STEP_HEADERS


def _sentence(line: str) -> str:
    """A step's line ending in a full stop, which the Step-4 cut (``strip_step4``) relies on."""
    line = line.rstrip()
    return line if not line.strip() or line.endswith((".", "!", "?")) else line + "."


def _line_break_ids(tokenizer: Any) -> list[int]:
    """Vocabulary entries that decode to whitespace containing a line break."""
    return [i for i in range(len(tokenizer)) if "\n" in (t := tokenizer.decode([i])) and not t.strip()]


class HFTeacher(Teacher):
    """Chat-templated, left-padded batched generation.

    Pass ``model`` and ``tokenizer`` directly (tests, an already loaded backbone) or ``name_or_path``,
    which is resolved by ``gream_lit.modeling.backbone.load_backbone`` (it knows the SmolLM2 GGUF).
    Decoding is set here explicitly, never inherited from the model's ``generation_config``.

    ``guided_steps`` (for chain-of-thought requests; ``True`` means ``COT_STEP_HEADERS``) writes each
    header into the answer and lets the model complete that one line (``max_new_tokens`` split evenly
    over the steps), so the answer always has every step in order. A small model asked for four steps
    in one go drifts off the format (SmolLM2-135M: 0 of 20 samples kept); guided, only what it says
    inside each step is judged by the filters.
    """

    def __init__(
        self,
        name_or_path: str = "smollm2-135m-instruct",
        model: Any = None,
        tokenizer: Any = None,
        max_new_tokens: int = 384,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        batch_size: int = 4,
        seed: int = 0,
        guided_steps: bool | Sequence[str] = False,
    ) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("pass both model and tokenizer, or neither (then name_or_path is loaded)")
        if model is None:
            from gream_lit.modeling.backbone import load_backbone

            model, tokenizer = load_backbone(name_or_path)
        if tokenizer.chat_template is None:
            raise ValueError(f"tokenizer of {name_or_path!r} has no chat template; a teacher needs a chat model")
        self.name = name_or_path
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seed = seed
        self.guided_steps = tuple(COT_STEP_HEADERS if guided_steps is True else guided_steps or ())
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        self.generation = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
        if self.guided_steps:
            step = {
                "max_new_tokens": max(1, max_new_tokens // len(self.guided_steps)),
                "stop_strings": ["\n"],
                # a line break or end straight after the header would leave the step empty
                "begin_suppress_tokens": [*_line_break_ids(tokenizer), tokenizer.eos_token_id],
            }
            self.step_generation = GenerationConfig(**{**self.generation.to_dict(), **step})

    @property
    def teacher_id(self) -> str:
        g = self.generation
        decoding = f"sample(t={g.temperature},p={g.top_p},seed={self.seed})" if g.do_sample else "greedy"
        guided = f":guided{len(self.guided_steps)}" if self.guided_steps else ""
        return f"hf:{self.name}:{decoding}:max{g.max_new_tokens}{guided}"

    def complete(self, messages: Messages) -> str:
        return self.complete_many([messages])[0]

    def _generate(self, batch: Sequence[Messages]) -> list[str]:
        prompts = [self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in batch]
        if not self.guided_steps:
            return [t.strip() for t in self._continue(prompts, self.generation)]
        answers = [""] * len(prompts)
        for header in self.guided_steps:
            heads = [a + ("\n" if a else "") + header for a in answers]
            lines = self._continue([p + h for p, h in zip(prompts, heads)], self.step_generation)
            answers = [h + _sentence(line.split("\n", 1)[0]) for h, line in zip(heads, lines)]
        return answers

    @torch.inference_mode()
    def _continue(self, prompts: list[str], generation: GenerationConfig) -> list[str]:
        """The generated continuation of each (already templated) prompt."""
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            self.tokenizer.padding_side = side
        enc = enc.to(self.model.device)
        stops = {"tokenizer": self.tokenizer} if generation.stop_strings else {}
        out = self.model.generate(**enc, generation_config=generation, **stops)
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def complete_many(self, batch: Sequence[Messages], on_result: ResultCallback | None = None) -> list[str]:
        for m in batch:
            validate_messages(m)
        if self.generation.do_sample:
            torch.manual_seed(self.seed)
        out: list[str] = []
        for start in range(0, len(batch), self.batch_size):
            texts = self._generate(batch[start : start + self.batch_size])
            for j, text in enumerate(texts):
                if on_result is not None:
                    on_result(start + j, text)
            out.extend(texts)
        return out
