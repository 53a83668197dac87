"""SRPO end to end on a tiny random policy: the real CLI, robustness to degenerate batches, learning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from gream_lit.experiment.cli import main
from gream_lit.inference.sampling import Rollout, RolloutEngine
from gream_lit.rl.rewards import RewardContext, RewardResult, rsvr_reward
from gream_lit.rl.rl_data import RLDataModule
from gream_lit.rl.rollout_callback import RolloutCallback
from gream_lit.rl.srpo_module import SRPOModule

TINY = {"hidden_size": 32, "num_layers": 1, "num_heads": 2}


def write_two_item_catalog(folder: Path) -> Path:
    """Users who only ever take item 0 or only item 1: the next item is whatever fills the history."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = {f"u{u}": [u % 2] * 8 for u in range(8)}
    (folder / "T.inter.json").write_text(json.dumps(inter))
    (folder / "T.item.json").write_text(json.dumps({"0": {"title": "red"}, "1": {"title": "blue"}}))
    (folder / "T.index.json").write_text(json.dumps({"0": ["<|a_1|>", "<|b_1|>"], "1": ["<|a_2|>", "<|b_2|>"]}))
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return write_two_item_catalog(tmp_path / "data")


pytestmark = pytest.mark.usefixtures("one_thread")


class History(L.Callback):
    """Copies the logged metrics after every training batch."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def srpo_options(mode: str = "direct", **kwargs) -> dict:
    """The tiny SRPO module's arguments, ``kwargs`` over them."""
    options = dict(
        backbone="tiny",
        tiny=TINY,
        mode=mode,
        rollout={"n": 8, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 3 if mode == "direct" else 8},
        update_groups=1,
        max_gen_batches=1,
        mini_batch_groups=2,
        pass_k=2,
        lr=5e-3,
        warmup_steps=1,
        weight_decay=0.0,
        log_samples_every=0,
    )
    return {**options, **kwargs}


def fit(
    data_dir: Path, mode: str = "direct", epochs: int = 1, callbacks: tuple = (), **kwargs
) -> tuple[SRPOModule, list[dict]]:
    L.seed_everything(0)
    dm = RLDataModule(
        data_dir=str(data_dir), index_path=str(data_dir / "T.index.json"), mode=mode, batch_size=4, max_val_prompts=4
    )
    module = SRPOModule(**srpo_options(mode, **kwargs))
    history = History()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[history, *callbacks],
    )
    trainer.fit(module, datamodule=dm)
    return module, history.steps


def params(module: SRPOModule) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in module.policy.parameters()])


def test_cli_fit_logs_training_signals_and_exports(tmp_path: Path, data_dir: Path) -> None:
    export = tmp_path / "policy"
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 6,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "log_every_n_steps": 1,
            "accelerator": "cpu",
            "enable_checkpointing": False,
            "enable_progress_bar": False,
        },
        "model": {
            "class_path": "gream_lit.rl.srpo_module.SRPOModule",
            "init_args": {
                "backbone": "tiny",
                "tiny": TINY,
                "mode": "direct",
                "rollout": {"n": 8, "max_new_tokens": 3},
                "val_sampling": {"n": 2, "temperature": 0.6, "top_p": 0.8, "max_new_tokens": 3},
                "test_sampling": {"n": 2, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 3},
                "update_groups": 1,
                "max_gen_batches": 1,
                "mini_batch_groups": 1,
                "pass_k": 2,
                "lr": 1e-3,
                "warmup_steps": 1,
                "log_samples_every": 1,
                "export_dir": str(export),
            },
        },
        "data": {
            "class_path": "gream_lit.rl.rl_data.RLDataModule",
            "init_args": {
                "data_dir": str(data_dir),
                "index_path": str(data_dir / "T.index.json"),
                "mode": "direct",
                "batch_size": 2,
                "eval_batch_size": 4,
            },
        },
    }
    path = tmp_path / "rl_tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path), "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, texts = set(), set()
    for events in (tmp_path / "run").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        texts |= set(acc.Tags()["tensors"])
    logged = (
        "reward",
        "exact",
        "format",
        "partial@1",
        "groups_kept",
        "response_length",
        "adv_mean",
        "kl",
        "clip_fraction",
    )
    for key in logged:
        assert f"rl/train/{key}" in scalars, key
    assert {"rl/val/reward", "rl/val/recall@1", "rl/test/ndcg@5"} <= scalars
    assert "rl/train/samples/text_summary" in texts
    assert (export / "config.json").is_file() and (export / "tokenizer_config.json").is_file()


def test_mode_mismatch_with_data_is_an_error(data_dir: Path) -> None:
    dm = RLDataModule(data_dir=str(data_dir), index_path=str(data_dir / "T.index.json"), mode="reason")
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="SRPO mode 'direct' but the data module builds 'reason'"):
        trainer.fit(SRPOModule(backbone="tiny", tiny=TINY, mode="direct", pass_k=2), datamodule=dm)


def test_reward_rises_on_two_item_catalog(data_dir: Path) -> None:
    _, steps = fit(data_dir, epochs=20, kl_coef=0.0)
    rewards = [s["rl/train/reward"] for s in steps]
    quarter = len(rewards) // 4
    first, last = sum(rewards[:quarter]) / quarter, sum(rewards[-quarter:]) / quarter
    assert last > first + 0.15, (first, last)


@pytest.mark.parametrize("reward, advantage", [("exact", "bgae"), ("rsvr", "grpo")])
def test_ablations_train(data_dir: Path, reward: str, advantage: str) -> None:
    module, steps = fit(data_dir, epochs=3, reward=reward, advantage=advantage)
    updates = [s for s in steps if "rl/train/pg_loss" in s]
    assert updates and all(math.isfinite(s["rl/train/pg_loss"]) for s in updates)
    if reward == "exact":  # 0/1 rewards: no partial credit ever reaches the reward
        assert all(s["rl/train/reward"] == s["rl/train/exact"] for s in steps)
    assert torch.isfinite(params(module)).all()


def test_lora_policy_uses_disabled_adapter_as_reference(data_dir: Path) -> None:
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    module, steps = fit(data_dir, epochs=2, lora=lora)
    assert module._ref is None and hasattr(module.policy, "disable_adapter")
    updates = [s for s in steps if "rl/train/kl" in s]
    assert updates and all(math.isfinite(s["rl/train/kl"]) and s["rl/train/kl"] >= 0 for s in updates)
    assert any(s["rl/train/kl"] > 0 for s in updates)  # the adapter moved away from the reference


def test_lora_checkpoints_hold_only_trained_weights_and_restore_them(tmp_path: Path, data_dir: Path) -> None:
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    module, _ = fit(data_dir, lora=lora)
    path = tmp_path / "rl.ckpt"
    module.trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    trained = {k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in k or "trainable_tokens" in k for k in trained)
    assert saved["state_dict"].keys() == trained.keys()  # no frozen base weights
    assert "frozen_base" in saved and saved["optimizer_states"]

    fresh = SRPOModule(
        backbone="tiny",
        tiny=TINY,
        mode="direct",
        lora=lora,
        rollout={"n": 8, "max_new_tokens": 3},
        val_sampling={"n": 2, "max_new_tokens": 3},
        pass_k=2,
    )
    dm = RLDataModule(
        data_dir=str(data_dir),
        index_path=str(data_dir / "T.index.json"),
        mode="direct",
        batch_size=4,
        max_val_prompts=4,
    )
    L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1
    ).validate(fresh, datamodule=dm, ckpt_path=str(path))
    restored = fresh.state_dict()
    for key, value in trained.items():
        torch.testing.assert_close(restored[key], value, msg=key)


def test_all_zero_reward_groups_skip_the_update(data_dir: Path) -> None:
    # a random tiny policy never writes <think>...<answer>: every group is all zero and filtered out
    module, steps = fit(data_dir, mode="reason", max_gen_batches=2)
    assert steps and all(s["rl/train/reward"] == 0.0 and s["rl/train/groups_kept"] == 0.0 for s in steps)
    assert steps[-1]["rl/train/skipped_updates"] == 1.0
    assert "rl/train/pg_loss" not in steps[-1]
    assert torch.isfinite(params(module)).all()


def test_nonfinite_old_logprobs_are_masked_and_counted(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = RolloutEngine.logprobs

    def poisoned(self, model, rollout, rows=None, temperature=1.0):
        out = original(self, model, rollout, rows, temperature)
        if not torch.is_grad_enabled():  # the old / reference passes
            out = out.clone()
            out[0, 0] = math.nan
            out[1, 0] = math.inf
        return out

    monkeypatch.setattr(RolloutEngine, "logprobs", poisoned)
    module, steps = fit(data_dir, epochs=2)
    updates = [s for s in steps if "rl/train/nonfinite_seqs" in s]
    assert updates and all(s["rl/train/nonfinite_seqs"] >= 2 for s in updates)
    assert all(math.isfinite(s["rl/train/pg_loss"]) for s in updates if "rl/train/pg_loss" in s)
    assert torch.isfinite(params(module)).all()


def test_nan_policy_loss_never_steps(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = RolloutEngine.logprobs

    def nan_when_training(self, model, rollout, rows=None, temperature=1.0):
        out = original(self, model, rollout, rows, temperature)
        return out * math.nan if torch.is_grad_enabled() else out

    monkeypatch.setattr(RolloutEngine, "logprobs", nan_when_training)
    L.seed_everything(0)
    module, steps = fit(data_dir, epochs=2)
    updates = [s for s in steps if "rl/train/skipped_steps" in s]
    assert updates and all(s["rl/train/skipped_steps"] >= 1 for s in updates)
    assert torch.isfinite(params(module)).all()


def test_empty_generations_score_zero_and_are_counted(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = RolloutEngine.generate

    def empty(self, model, messages, sampling):
        rollout = original(self, model, messages, sampling)
        rollout.response_ids[:] = self.tokenizer.eos_token_id
        rollout.response_mask = self.response_mask(rollout.response_ids)
        rollout.texts = self.decode(rollout.response_ids, rollout.response_mask)
        return rollout

    monkeypatch.setattr(RolloutEngine, "generate", empty)
    _, steps = fit(data_dir)
    assert steps and all(s["rl/train/empty"] == 1.0 and s["rl/train/reward"] == 0.0 for s in steps)
    assert all(s["rl/train/response_length"] == 1.0 for s in steps)


def fixed_rollout(module: SRPOModule, messages: list, responses: list[str], n: int, suffix: str = "") -> Rollout:
    """A rollout that wrote ``responses`` (``n`` per prompt, prompt-major), each tokenized with ``suffix``
    (e.g. the end-of-sequence token) after it."""
    ids = module.tokenizer([r + suffix for r in responses], add_special_tokens=False, return_tensors="pt").input_ids
    prompt, prompt_mask = module.engine.encode(messages, ids.device)
    return Rollout(
        prompt.repeat_interleave(n, 0), prompt_mask.repeat_interleave(n, 0), ids, torch.ones_like(ids), responses, n
    )


class FixedRollouts:
    """A generation engine that answers every prompt with the target's ID ``n`` times (a fixed source)."""

    def __init__(self) -> None:
        self.prompts: list[int] = []

    def generate(self, model, messages, sampling):
        self.prompts.append(len(messages))
        item = self.module.trainer.datamodule.index.item_string(0)
        return fixed_rollout(self.module, messages, [item] * (len(messages) * sampling.n), sampling.n)


def test_rollouts_come_from_the_rollout_callbacks_engine(data_dir: Path) -> None:
    """A RolloutCallback given to the trainer replaces the default one; its engine fills every batch."""
    engine = FixedRollouts()

    class Attach(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            engine.module = pl_module

    module, steps = fit(data_dir, callbacks=(Attach(), RolloutCallback(engine)))
    assert engine.prompts == [4] * module.trainer.num_training_batches  # every generation batch, from our engine
    assert sum(isinstance(cb, RolloutCallback) for cb in module.trainer.callbacks) == 1
    assert steps and steps[0]["rl/train/response_length"] == pytest.approx(float(module.trainer.datamodule.index.depth))


def test_direct_mode_beam_evaluation_ranks_valid_items(data_dir: Path) -> None:
    """eval_decoding=beam tests with the exact constrained decoder: every ranked item is a real item."""
    module, _ = fit(data_dir, eval_decoding="beam", num_beams=2, ks=(1, 2))
    dm = RLDataModule(
        data_dir=str(data_dir), index_path=str(data_dir / "T.index.json"), mode="direct", eval_batch_size=8
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(module, datamodule=dm)[0]
    assert results["rl/test/recall@2"] == pytest.approx(1.0)  # two items, two beams: the target is always listed
    assert 0.0 < results["rl/test/ndcg@2"] <= 1.0
    weights = {k: v.clone() for k, v in module.policy.state_dict().items()}
    module.hparams.test_dtype = "bfloat16"  # a bfloat16 copy decodes; the fp32 policy is left as it was
    assert trainer.test(module, datamodule=dm)[0]["rl/test/recall@2"] == pytest.approx(1.0)
    assert all(torch.equal(v, module.policy.state_dict()[k]) for k, v in weights.items())
    assert module._search == []


def test_beam_evaluation_needs_direct_mode() -> None:
    with pytest.raises(ValueError, match="eval_decoding"):
        SRPOModule(backbone="tiny", tiny=TINY, mode="reason", eval_decoding="beam")


SEEN_CONTEXTS: list = []


def history_aware_reward(response: str, ctx: RewardContext) -> RewardResult:
    """A user reward: RSVR's result, recording the context it was given."""
    SEEN_CONTEXTS.append(ctx)
    return rsvr_reward(response, ctx.target, ctx.mode, ctx.direct_len)


def zero_advantage(rewards: torch.Tensor, group_size: int, *, exact: torch.Tensor, pass_k: int) -> torch.Tensor:
    return torch.zeros_like(rewards)


def test_a_reward_by_import_path_sees_history_index_and_catalogue(data_dir: Path) -> None:
    SEEN_CONTEXTS.clear()
    module, _ = fit(data_dir, reward="test_srpo.history_aware_reward")
    dm = module.trainer.datamodule
    assert SEEN_CONTEXTS and all(ctx.index is dm.index and ctx.catalog is dm.catalog for ctx in SEEN_CONTEXTS)
    for ctx in SEEN_CONTEXTS:  # every user of the toy catalogue only ever takes one item
        assert len(ctx.history) >= 4 and set(ctx.history) == {ctx.item}
        assert ctx.target == dm.index.item_string(ctx.item)


def test_an_advantage_by_import_path_drives_the_update(data_dir: Path) -> None:
    """All-zero advantages: the clipped loss has no gradient and the KL term starts at zero, so the policy
    the registry's function trained is exactly the one it started from."""
    start = {}

    class Start(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            start["params"] = params(pl_module)

    module, steps = fit(data_dir, advantage="test_srpo.zero_advantage", callbacks=(Start(),))
    assert any("rl/train/pg_loss" in s for s in steps)  # updates ran
    assert torch.equal(params(module), start["params"])


def test_unknown_reward_or_advantage_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown reward 'rsvrr'; expected one of \['exact', 'rsvr'\]"):
        SRPOModule(backbone="tiny", reward="rsvrr")
    with pytest.raises(ValueError, match=r"advantage 'no_such_module.f': cannot import it"):
        SRPOModule(backbone="tiny", advantage="no_such_module.f")
