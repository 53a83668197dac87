"""SRPO of short thoughts (``thought_rollouts``): cutting thoughts, their reward, a tiny policy end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_srpo import History, srpo_options, write_two_item_catalog

from gream_lit.experiment.cli import main
from gream_lit.inference.bundle import BUNDLE_FILE
from gream_lit.inference.constrained_beam import constrained_beam_search
from gream_lit.inference.prefix_tables import build_prefix_tables, index_token_ids
from gream_lit.inference.reasoning import left_pad
from gream_lit.inference.sampling import TextStop
from gream_lit.modeling.tiny import tiny_word_tokenizer
from gream_lit.rl.rewards import retrieval_credit, thought_reward
from gream_lit.rl.rl_data import RLDataModule
from gream_lit.rl.srpo_module import SRPOModule
from gream_lit.rl.thought_rollouts import ThoughtRolloutEngine, answers_after, cut_thought

WORDS = ("recently", "mostly", "and", ";", ".")
SHORT = {"layout": "short", "max_new_tokens": 4, "num_beams": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_two_item_catalog(tmp_path / "data")


def letters(tokens: list[int]) -> str:
    """A decoder for the cutting tests: token k is the k-th letter, 9 is ``</``, 10 is ``t>``."""
    return "".join("abcdefgh"[t] if t < 8 else {9: "</", 10: "t>"}[t] for t in tokens)


def test_cut_thought_keeps_tokens_up_to_the_close_or_the_first_eos() -> None:
    assert cut_thought([0, 9, 10, 1, 2], letters, "</t>", {7}) == ([0, 9, 10], True)  # the close spans two tokens
    assert cut_thought([0, 1, 7, 9, 10], letters, "</t>", {7}) == ([0, 1, 7], False)  # EOS first: open
    assert cut_thought([0, 1, 2], letters, "</t>", {7}) == ([0, 1, 2], False)  # out of budget


def test_text_stop_reads_only_the_generated_tail() -> None:
    tok = tiny_word_tokenizer(WORDS)
    prompt = tok("</think> recently", add_special_tokens=False)["input_ids"]  # a close in the prompt does not count
    rows = [prompt + tok(text, add_special_tokens=False)["input_ids"] for text in ("and </think>", "and mostly")]
    stop = TextStop(tok, "</think>", len(prompt))
    assert stop(torch.tensor(rows), torch.zeros(2, 1)).tolist() == [True, False]


def test_retrieval_credit_and_thought_reward_hand_values() -> None:
    assert retrieval_credit(-math.log(100), 100) == 0.0  # a uniform guess earns nothing
    assert retrieval_credit(-math.log(10), 100) == pytest.approx(0.5)
    assert retrieval_credit(0.0, 100) == 1.0 and retrieval_credit(-9.0, 100) == 0.0
    hit = thought_reward(True, "<|a_1|><|b_1|>", "<|a_1|><|b_1|>", -math.log(10), 100)
    assert (hit.reward, hit.exact, hit.hit, hit.matched_levels) == (pytest.approx(1.5), True, True, 2)
    prefix = thought_reward(True, "<|a_1|><|b_2|>", "<|a_1|><|b_1|>", -math.log(10), 100, retrieval_weight=0.2)
    assert prefix.reward == pytest.approx(0.5 + 0.2 * 0.5) and not prefix.exact
    unclosed = thought_reward(False, "<|a_1|><|b_1|>", "<|a_1|><|b_1|>", 0.0, 100)
    assert (unclosed.reward, unclosed.match, unclosed.exact, unclosed.hit) == (0.0, 0.0, True, False)  # gated


def tiny_module(**kwargs) -> SRPOModule:
    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "words": WORDS}
    options = srpo_options(
        "reason", tiny=tiny, reasoning=SHORT, eval_decoding="beam", num_beams=2, ks=(1, 2), log_samples_every=1
    )
    options["rollout"] = {**options["rollout"], "max_new_tokens": 4}
    return SRPOModule(**{**options, **kwargs})


def short_dm(data_dir: Path, **kwargs) -> RLDataModule:
    return RLDataModule(
        data_dir=str(data_dir),
        index_path=str(data_dir / "T.index.json"),
        mode="reason",
        prompt_format="compact",
        batch_size=4,
        max_val_prompts=4,
        **kwargs,
    )


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_thought_rollouts_train_and_test_in_both_modes(data_dir: Path) -> None:
    """Rollouts are thoughts after ``<think>``; rewards vary through the retrieval credit;
    the reasoning-mode test thinks, closes and ranks catalogue items only; the direct test still works."""
    L.seed_everything(0)
    module, history = tiny_module(), History()
    trainer(max_epochs=1, limit_val_batches=0, callbacks=[history]).fit(module, datamodule=short_dm(data_dir))
    assert isinstance(module.engine, ThoughtRolloutEngine)
    step = history.steps[0]
    assert 0.0 < step["rl/train/format"] < 1.0  # some thoughts of the random policy closed in 4 tokens
    assert step["rl/train/signal_groups"] > 0.0  # retrieval credits differ between closed thoughts
    assert 0.0 < step["rl/train/response_length"] <= 4.0
    assert "rl/train/groups_updated" in step
    assert all(len(a) >= 2 for a in module._last_answers)  # an ID after every thought
    for mode in ("reasoning", "direct"):
        results = trainer().test(module, datamodule=short_dm(data_dir, eval_mode=mode, eval_batch_size=8))[0]
        assert results["rl/test/recall@2"] == pytest.approx(1.0)  # two items, two beams
        assert ("rl/test/close_rate" in results) == (mode == "reasoning")
        assert ("rl/test/grounded_rate" in results) == (mode == "reasoning")
    predictions = trainer().predict(module, datamodule=short_dm(data_dir, eval_mode="reasoning"))
    assert all(t.startswith("<think>") and "</think>" in t for batch in predictions for t in batch["texts"])
    options, prompt = module.bundle_reasoning()
    assert options.layout == "short" and prompt.format == "compact"


def test_answers_after_scores_the_target_as_the_search_does(data_dir: Path) -> None:
    """The target's log-prob after a thought is the score the exhaustive constrained search gives it."""
    module = tiny_module()
    dm = short_dm(data_dir)
    dm.prepare_data()
    dm.setup("fit")
    module.trainer = trainer()
    module.trainer.datamodule = dm
    module.configure_model()
    tok, index = module.tokenizer, dm.index
    contexts = [tok("<think>recently and </think>", add_special_tokens=False)["input_ids"], [5, 6]]
    targets = [tok.convert_tokens_to_ids(index.item_tokens(i)) for i in (0, 1)]
    tables = build_prefix_tables(index_token_ids(index, tok), tok.eos_token_id)
    top, logp = answers_after(module.policy, contexts, targets, tables, tok.pad_token_id)
    ids, mask = left_pad(contexts, tok.pad_token_id, torch.device("cpu"))
    beams = constrained_beam_search(module.policy.eval(), ids, mask, tables, num_beams=2)
    for row, item in enumerate((0, 1)):
        rank = beams.items[row].tolist().index(item)
        assert float(logp[row]) == pytest.approx(float(beams.scores[row, rank]), abs=1e-4)
    assert top.tolist() == beams.items[:, 0].tolist()


def test_short_thoughts_need_matching_options_and_prompts(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="layout 'short' with mode 'reason'"):
        SRPOModule(backbone="tiny", mode="direct", reasoning=SHORT)
    with pytest.raises(ValueError, match="eval_decoding: beam"):
        SRPOModule(backbone="tiny", mode="reason", reasoning=SHORT)
    with pytest.raises(ValueError, match="go together"):
        trainer(max_epochs=1).fit(tiny_module(reasoning=None, eval_decoding="sample"), datamodule=short_dm(data_dir))
    with pytest.raises(Exception, match="eval_mode 'reasoning'"):
        RLDataModule(data_dir=str(data_dir), index_path=str(data_dir / "T.index.json"), eval_mode="reasoning")


def test_cli_fits_thought_srpo_and_tests_it_thinking(tmp_path: Path, data_dir: Path) -> None:
    """The real CLI: a short-thought SRPO run logs its rollouts, tests in reasoning mode and writes a bundle
    whose reasoning mode is the short layout."""
    export = tmp_path / "policy"
    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "words": list(WORDS)}
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "log_every_n_steps": 1,
            "accelerator": "cpu",
            "enable_checkpointing": False,
            "enable_progress_bar": False,
        },
        "model": {
            "class_path": "gream_lit.rl.srpo_module.SRPOModule",
            "init_args": {
                **srpo_options("reason", tiny=tiny, log_samples_every=1, update_groups=1, mini_batch_groups=1),
                "rollout": {"n": 4, "max_new_tokens": 4},
                "reasoning": SHORT,
                "eval_decoding": "beam",
                "num_beams": 2,
                "ks": [1, 2],
                "export_dir": str(export),
            },
        },
        "data": {
            "class_path": "gream_lit.rl.rl_data.RLDataModule",
            "init_args": {
                "data_dir": str(data_dir),
                "index_path": str(data_dir / "T.index.json"),
                "mode": "reason",
                "prompt_format": "compact",
                "eval_mode": "reasoning",
                "batch_size": 2,
                "eval_batch_size": 4,
            },
        },
    }
    config["model"]["init_args"]["pass_k"] = 2
    path = tmp_path / "rl_thoughts.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    scalars, texts = set(), set()
    for events in (tmp_path / "run").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        texts |= set(acc.Tags()["tensors"])
    assert {"rl/train/reward", "rl/train/format", "rl/train/signal_groups"} <= scalars
    assert {"rl/val/close_rate", "rl/val/grounded_rate", "rl/val/distinct_top1", "rl/val/ndcg@2"} <= scalars
    assert "rl/train/samples/text_summary" in texts
    bundle = json.loads((export / BUNDLE_FILE).read_text())
    assert bundle["reasoning"]["options"]["layout"] == "short" and bundle["reasoning"]["prompt"]["format"] == "compact"
