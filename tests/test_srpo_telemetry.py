"""SRPO telemetry: the pure functions against hand values, and a tiny fit's TensorBoard events."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from test_srpo import TINY, srpo_options, write_two_item_catalog

from gream_lit.inference.sampling import Rollout
from gream_lit.rl import telemetry
from gream_lit.rl.rewards import RewardResult
from gream_lit.rl.rl_data import RLDataModule
from gream_lit.rl.srpo_module import SRPOModule

pytestmark = pytest.mark.usefixtures("one_thread")


def rollout(texts: list[str], group_size: int, lengths: list[int]) -> Rollout:
    mask = torch.zeros(len(texts), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    ids = torch.zeros(len(texts), 1, dtype=torch.long)
    return Rollout(ids, torch.ones_like(ids), mask.clone(), mask, texts, group_size)


def result(reward: float, exact: bool = False, levels: int = 0) -> RewardResult:
    return RewardResult(reward=reward, match=reward, format_ok=True, exact=exact, matched_levels=levels)


# ---- pure functions -----------------------------------------------------------------------------
def test_signal_share_counts_groups_whose_rewards_vary() -> None:
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 0.2, 0.2, 0.2])  # constant, varied, constant
    assert telemetry.signal_share(rewards, 3) == pytest.approx(1 / 3)
    assert telemetry.signal_share(torch.tensor([0.1, 0.3, 1.0, 0.0]), 2) == 1.0
    assert telemetry.signal_share(torch.tensor([1.0, 1.0]), 1) == 0.0  # a group of one never varies
    assert telemetry.signal_share(torch.tensor([]), 4) == 0.0
    with pytest.raises(ValueError, match="groups of 2"):
        telemetry.signal_share(torch.zeros(3), 2)


def test_tokens_per_second_and_reward_summary() -> None:
    assert telemetry.tokens_per_second(300, 1.5) == 200.0
    assert telemetry.tokens_per_second(300, 0.0) == 0.0
    assert telemetry.reward_summary(torch.tensor([0.0, 0.25, 1.0, 0.75])) == {"reward_mean": 0.5, "reward_max": 1.0}
    assert telemetry.reward_summary(torch.tensor([])) == {"reward_mean": 0.0, "reward_max": 0.0}


def test_step_scalars_names_every_step_tag() -> None:
    step = {"pg_loss": -0.5, "kl": 0.01, "clip_fraction": 0.25, "grad_norm": 3.0}
    scalars = telemetry.step_scalars(step, torch.tensor([0.0, 1.0, 0.5, 0.5]), 2, 120.0)
    assert scalars == {
        "rl/train/step/reward_mean": 0.5,
        "rl/train/step/reward_max": 1.0,
        "rl/train/step/kl": 0.01,
        "rl/train/step/pg_loss": -0.5,
        "rl/train/step/clip_fraction": 0.25,
        "rl/train/step/signal_groups": 0.5,
        "rl/train/step/rollout_tokens_per_s": 120.0,
    }


def test_rollout_stats_hand_values() -> None:
    results = [result(0.0), result(1.0, exact=True, levels=2), result(0.5, levels=1), result(0.5, levels=1)]
    stats = telemetry.rollout_stats(results, rollout(["a", "b", " ", "d"], 2, [2, 4, 1, 1]), torch.tensor([1, 0]))
    assert stats["reward"] == 0.5 and stats["reward_max"] == 1.0
    assert stats["exact"] == 0.25 and stats["empty"] == 0.25
    assert stats["response_length"] == 2.0
    assert stats["groups_kept"] == 0.5 and stats["signal_groups"] == 0.5
    assert stats["partial@1"] == 0.5 and stats["partial@2"] == 0.0


def test_subset_note_says_when_validation_is_a_subset() -> None:
    assert telemetry.subset_note(25, 8317).startswith("validation on 25 of 8317 users")
    assert telemetry.subset_note(8, 8) == "validation on all 8 users"
    assert telemetry.subset_note(5, None) == "validation on 5 users"


def test_sample_table_shows_titles_of_history_answers_and_target() -> None:
    titles = {0: "red", 1: "blue", 2: "green | dark"}
    lookup = {"<a_1><b_1>": 0, "<a_2><b_2>": 1}
    texts = ["<a_2><b_2>", "<a_1><b_1>", "nonsense", "<a_9><b_9>"]
    table = telemetry.sample_table(
        [[2, 0, 1, 0], [1, 1]],
        [1, 0],
        rollout(texts, 2, [2, 2, 2, 2]),
        [result(1.0, exact=True), result(0.0), result(0.0), result(0.0)],
        lambda text: text if text.startswith("<a_") else None,
        lookup,
        titles.__getitem__,
        prompts=2,
        last=3,
    )
    lines = table.splitlines()
    assert lines[0] == "**history** (last 3): red; blue; red  "
    assert lines[1] == "**target** item 1: blue"
    assert "| 0 | `<a_2><b_2>` | **1** | blue | 1.000 | `<a_2><b_2>` |" in lines  # the hit in bold
    assert "| 1 | `<a_1><b_1>` | 0 | red | 0.000 | `<a_1><b_1>` |" in lines
    assert "| 0 | `-` | - | - | 0.000 | `nonsense` |" in lines  # no answer
    assert "| 1 | `<a_9><b_9>` | - | - | 0.000 | `<a_9><b_9>` |" in lines  # an ID of no item
    piped = telemetry.sample_table(
        [[0]], [0], rollout(["<|a_1|>"], 1, [1]), [result(1.0)], lambda t: t, {"<|a_1|>": 0}, titles.__getitem__
    )
    assert "| 0 | `<\\|a_1\\|>` | **0** | red | 1.000 | `<\\|a_1\\|>` |" in piped  # pipes escaped: one row


def test_writers_skip_loggers_without_text(tmp_path: Path) -> None:
    module = SRPOModule(backbone="tiny", tiny=TINY, mode="direct", rollout={"n": 2, "max_new_tokens": 3}, pass_k=1)
    trainer = L.Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", enable_progress_bar=False)
    module.trainer = trainer
    assert telemetry.tensorboards(module) == []
    telemetry.write_text(module, "rl/train/samples", "no-op", 0)  # a CSV logger has no text: nothing happens
    telemetry.write_step(module, {"rl/train/step/kl": 0.5}, 3)
    trainer.logger.save()
    assert "rl/train/step/kl" in (Path(trainer.logger.log_dir) / "metrics.csv").read_text()


# ---- a tiny fit's TensorBoard -------------------------------------------------------------------
def test_tensorboard_of_an_srpo_stage_holds_a_scalar_per_step(tmp_path: Path) -> None:
    """Issue #34: every optimizer step has each ``rl/train/step/*`` scalar, even with Lightning's
    default ``log_every_n_steps`` (50) and up to two optimizer steps per training batch; validation says
    its size; sample rollouts are text."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data_dir = write_two_item_catalog(tmp_path / "data")
    L.seed_everything(0)
    dm = RLDataModule(
        data_dir=str(data_dir),
        index_path=str(data_dir / "T.index.json"),
        mode="direct",
        batch_size=4,
        eval_batch_size=2,
        max_val_prompts=4,
    )
    module = SRPOModule(
        **srpo_options(
            "direct",
            val_sampling={"n": 2, "temperature": 0.6, "top_p": 0.8, "max_new_tokens": 3},
            # as plain dicts, as the CLI hands them over (a frozen default fails TensorBoard's hparams.yaml)
            test_sampling={"n": 2, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 3},
            update_groups=2,
            mini_batch_groups=1,
            log_samples_every=1,
        )
    )
    logger = TensorBoardLogger(tmp_path / "tb", name="rl")
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=1,  # one batch of 2 of the 4 kept prompts, of 8 eligible users
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    steps = trainer.global_step
    assert steps >= 2, "the tiny fit should have stepped"
    logger.experiment.flush()

    acc = EventAccumulator(str(logger.log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for name in telemetry.STEP_SCALARS:
        tag = f"rl/train/step/{name}"
        assert tag in tags, tag
        assert [e.step for e in acc.Scalars(tag)] == list(range(steps)), tag
    assert [e.value for e in acc.Scalars("rl/train/step/rollout_tokens_per_s")][0] > 0
    assert [e.value for e in acc.Scalars(telemetry.VAL_USERS)] == [2.0]
    assert [e.value for e in acc.Scalars(telemetry.VAL_USERS_AVAILABLE)] == [8.0]
    # what the stage's metrics.json is written from
    assert float(trainer.callback_metrics[telemetry.VAL_USERS]) == 2.0
    assert float(trainer.callback_metrics[telemetry.VAL_USERS_AVAILABLE]) == 8.0

    texts = set(acc.Tags()["tensors"])
    assert {f"{telemetry.SAMPLES_TEXT}/text_summary", f"{telemetry.VAL_SUBSET_TEXT}/text_summary"} <= texts
    note = acc.Tensors(f"{telemetry.VAL_SUBSET_TEXT}/text_summary")
    assert len(note) == 1 and b"validation on 2 of 8 users" in note[0].tensor_proto.string_val[0]
    sample = acc.Tensors(f"{telemetry.SAMPLES_TEXT}/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "**history** (last 3): " in sample and ("red" in sample or "blue" in sample)
