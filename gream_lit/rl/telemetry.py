"""What an SRPO run shows while it trains: scalars, sample rollouts by title, the validation set's size.

Two kinds of training scalars, on two step axes:

- ``rl/train/<name>`` go through ``self.log`` once per generation batch (Lightning's step axis counts
  training batches and honours ``trainer.log_every_n_steps``);
- ``rl/train/step/<name>`` (``STEP_SCALARS``) are written straight to every logger once per optimizer
  step, at ``step = trainer.global_step`` before that step (0, 1, ...): one update runs several
  optimizer steps inside one training batch, and ``self.log`` keeps one value per key per batch.

The math lives in pure functions; the functions that write take the module (or its loggers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from gream_lit.inference.sampling import Rollout
from gream_lit.rl.distributed import Ranks
from gream_lit.rl.rewards import PREFIX_CREDIT, RewardResult

STEP = "rl/train/step/"
STEP_SCALARS = (
    "reward_mean",
    "reward_max",
    "kl",
    "pg_loss",
    "clip_fraction",
    "signal_groups",
    "rollout_tokens_per_s",
)
"""The per-optimizer-step scalars, each logged as ``rl/train/step/<name>``."""
VAL_USERS = "rl/val/users"
VAL_USERS_AVAILABLE = "rl/val/users_available"
VAL_SUBSET_TEXT = "rl/val/subset"
SAMPLES_TEXT = "rl/train/samples"


# ---- pure math ----------------------------------------------------------------------------------
def signal_share(rewards: torch.Tensor, group_size: int) -> float:
    """Share of prompt groups whose rewards vary (``max > min``), i.e. that carry a nonzero advantage.

    A group whose samples all score the same has GRPO z-scores of 0 everywhere, and BGAE adds no
    pass@k bonus to it (all hits: rho = 1; no hit: no bonus), so it teaches nothing.
    """
    if group_size < 1 or rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} cannot be split into groups of {group_size}")
    if rewards.numel() == 0:
        return 0.0
    groups = rewards.view(-1, group_size)
    return (groups.amax(1) > groups.amin(1)).float().mean().item()


def tokens_per_second(tokens: float, seconds: float) -> float:
    """``tokens / seconds``, 0 when no time was measured."""
    return float(tokens) / seconds if seconds > 0 else 0.0


def reward_summary(rewards: torch.Tensor) -> dict[str, float]:
    """``reward_mean`` and ``reward_max`` of a flat reward tensor (0 for an empty one)."""
    if rewards.numel() == 0:
        return {"reward_mean": 0.0, "reward_max": 0.0}
    r = rewards.double()
    return {"reward_mean": r.mean().item(), "reward_max": r.max().item()}


def step_scalars(step: Mapping[str, float], rewards: torch.Tensor, group_size: int, tokens_per_s: float) -> dict:
    """The ``STEP_SCALARS`` of one optimizer step: its loss terms (``step``: ``pg_loss``, ``kl``,
    ``clip_fraction``), the rewards of the rows it trained on, and the rollout throughput of its update."""
    values = {
        **reward_summary(rewards),
        "kl": step["kl"],
        "pg_loss": step["pg_loss"],
        "clip_fraction": step["clip_fraction"],
        "signal_groups": signal_share(rewards, group_size),
        "rollout_tokens_per_s": tokens_per_s,
    }
    return {f"{STEP}{k}": float(values[k]) for k in STEP_SCALARS}


def rollout_stats(results: Sequence[RewardResult], rollout: Rollout, kept: torch.Tensor) -> dict[str, float]:
    """One generation batch's scalars (without prefix): reward mean and max, match, exact, format,
    empty responses, response length, groups kept, groups with signal, and the ``partial@<level>`` shares
    of responses that match a prefix of ``level`` ID tokens but not the whole ID."""
    n = len(results)
    rewards = torch.tensor([r.reward for r in results], dtype=torch.float64)
    stats = {
        "reward": rewards.mean().item(),
        "reward_max": rewards.max().item(),
        "match": sum(r.match for r in results) / n,
        "exact": sum(r.exact for r in results) / n,
        "format": sum(r.format_ok for r in results) / n,
        "empty": sum(not t.strip() for t in rollout.texts) / n,
        "response_length": rollout.response_mask.sum(1).float().mean().item(),
        "groups_kept": kept.float().mean().item(),
        "signal_groups": signal_share(rewards, rollout.group_size),
    }
    for level in range(1, len(PREFIX_CREDIT) + 1):
        share = sum((not r.exact) and min(r.matched_levels, len(PREFIX_CREDIT)) == level for r in results) / n
        stats[f"partial@{level}"] = share
    return {k: float(v) for k, v in stats.items()}


def subset_note(validated: int, available: int | None) -> str:
    """The one-time TensorBoard note on how many users the validation curve stands for."""
    if available is None:
        return f"validation on {validated} users"
    if validated >= available:
        return f"validation on all {available} users"
    return (
        f"validation on {validated} of {available} users (a subset: `max_val_prompts` or `limit_val_batches`); "
        "its curve is not comparable with a test on all users"
    )


def _cell(text: str, limit: int = 160) -> str:
    """Text fit for one markdown table cell."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sample_table(
    histories: Sequence[Sequence[int]],
    targets: Sequence[int],
    rollout: Rollout,
    results: Sequence[RewardResult],
    parse: Callable[[str], str | None],
    lookup: Mapping[str, int],
    title: Callable[[int], str],
    prompts: int = 2,
    last: int = 3,
) -> str:
    """A markdown table of the first ``prompts`` prompts' rollouts: each prompt's ``last`` history titles
    and its target's, then one row per sample: the answer's ID (``parse(text)``, ``None``: no answer),
    the item it names (``lookup``; bold = the target) and its title, the reward, and the raw text."""
    g = rollout.group_size
    lines = []
    for p in range(min(prompts, len(rollout) // g)):
        history = "; ".join(_cell(title(i), 60) for i in list(histories[p])[-last:])
        lines += [
            f"**history** (last {last}): {history}  ",
            f"**target** item {targets[p]}: {_cell(title(targets[p]), 80)}",
            "",
            "| sample | answer ID | item | title | reward | text |",
            "|---|---|---|---|---|---|",
        ]
        for i in range(p * g, (p + 1) * g):
            answer = parse(rollout.texts[i])
            item = lookup.get(answer) if answer is not None else None
            name = "-" if item is None else _cell(title(item), 80)
            shown = "-" if item is None else (f"**{item}**" if item == targets[p] else str(item))
            text = _cell(rollout.texts[i]) or " "
            answer_id = _cell(answer) if answer else "-"
            lines.append(f"| {i - p * g} | `{answer_id}` | {shown} | {name} | {results[i].reward:.3f} | `{text}` |")
        lines.append("")
    return "\n".join(lines)


# ---- writing ------------------------------------------------------------------------------------
def tensorboards(module: L.LightningModule) -> list:
    """The ``SummaryWriter`` of every TensorBoard logger of ``module``'s trainer (none on other ranks
    than zero, nor for other loggers)."""
    if module._trainer is None or not module.trainer.is_global_zero:
        return []
    return [lg.experiment for lg in module.loggers if isinstance(lg, TensorBoardLogger)]


def write_text(module: L.LightningModule, tag: str, text: str, step: int) -> None:
    """``add_text`` on every TensorBoard logger (other loggers have no text)."""
    for writer in tensorboards(module):
        writer.add_text(tag, text, step)


def write_step(module: L.LightningModule, scalars: Mapping[str, float], step: int) -> None:
    """``scalars`` at ``step`` on every logger, whatever ``log_every_n_steps`` says (an RL optimizer
    step is too dear to skip). Lightning's loggers write on rank zero only."""
    if module._trainer is None:
        return
    for logger in module.loggers:
        logger.log_metrics(dict(scalars), step=step)


class ValidationSize(L.Callback):
    """Says how many users a validation stands for: ``rl/val/users`` (validated, summed over batches
    and ranks) and ``rl/val/users_available`` (the data module's ``val_available``: before
    ``max_val_prompts``) as epoch scalars, so in TensorBoard and the stage's ``metrics.json``; and once
    per run the ``rl/val/subset`` TensorBoard note (``subset_note``)."""

    def __init__(self) -> None:
        self.users = 0
        self.noted = False

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.users = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.users += len(batch["user"])
        pl_module.log(VAL_USERS, float(len(batch["user"])), reduce_fx="sum", batch_size=1, sync_dist=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        available = getattr(trainer.datamodule, "val_available", None)
        if available is not None:
            pl_module.log(VAL_USERS_AVAILABLE, float(available), batch_size=1, sync_dist=True)
        validated = int(Ranks.of(pl_module).sum(self.users))
        if not trainer.sanity_checking and not self.noted:
            self.noted = True
            write_text(pl_module, VAL_SUBSET_TEXT, subset_note(validated, available), pl_module.global_step)
