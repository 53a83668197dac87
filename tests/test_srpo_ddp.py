"""SRPO across two gloo processes gives the one-process update: each rank samples (here: is given) the
rollouts of its half of every generation batch, the ranks agree on the update, gather the kept groups in
one-process order, split each optimizer step's rows and sum their gradients.

Plain SGD replaces AdamW (as in ``test_ddp``): Adam turns float-rounding differences of near-zero
gradients into full-size steps, so equal updates would show as unequal weights.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from test_ddp import DestroyGlooGroup
from test_srpo import TINY, fixed_rollout, write_two_item_catalog
from torch.utils.data import DataLoader

from gream_lit.data.samplers import SequentialDistributedSampler
from gream_lit.inference.sampling import Rollout
from gream_lit.rl.rl_data import RLDataModule, collate_prompts
from gream_lit.rl.rollout_callback import RolloutCallback
from gream_lit.rl.srpo_module import SRPOModule

GLOBAL_BATCH = 4
GROUP = 4


class OrderedRLData(RLDataModule):
    """Training prompts in order, every global batch split into contiguous per-rank slices."""

    def train_dataloader(self) -> DataLoader:
        sampler = SequentialDistributedSampler(self.train_set, self.batch_size)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_prompts)


class SGDSRPO(SRPOModule):
    def configure_optimizers(self):
        opt = torch.optim.SGD([p for p in self.policy.parameters() if p.requires_grad], lr=self.hparams.lr)
        constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": constant, "interval": "step"}}


class PromptRollouts:
    """Rollouts fixed by the prompt alone: response ``j`` of a prompt names item ``(j + len(prompt)) % 2``,
    so every group mixes hits and misses and the same prompt gets the same group in any process."""

    def generate(self, model, messages, sampling) -> Rollout:
        index = self.module.trainer.datamodule.index
        texts = [index.item_string((j + len(str(m))) % 2) for m in messages for j in range(sampling.n)]
        return fixed_rollout(self.module, messages, texts, sampling.n, suffix=self.module.tokenizer.eos_token)


class Attach(L.Callback):
    """Gives the rollout engine its module, and saves each rank's final trainable weights."""

    def __init__(self, engine: PromptRollouts, out: Path) -> None:
        self.engine, self.out = engine, out

    def on_fit_start(self, trainer, pl_module) -> None:
        self.engine.module = pl_module
        self.start = [p.detach().cpu().clone() for p in pl_module.policy.parameters() if p.requires_grad]

    def on_train_end(self, trainer, pl_module) -> None:
        params = [p.detach().cpu() for p in pl_module.policy.parameters() if p.requires_grad]
        record = {"params": params, "start": self.start, "step": trainer.global_step}
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")


def run(data_dir: Path, out: Path, devices: int) -> None:
    out.mkdir(parents=True)
    torch.manual_seed(0)
    module = SGDSRPO(
        backbone="tiny",
        tiny=TINY,
        mode="direct",
        rollout={"n": GROUP, "max_new_tokens": 3},
        update_groups=GLOBAL_BATCH,
        max_gen_batches=1,
        mini_batch_groups=2,  # two optimizer steps per update, 8 rows each, split over the ranks
        forward_batch_size=3,
        pass_k=2,
        lr=0.5,
        warmup_steps=1,
        log_samples_every=0,
    )
    dm = OrderedRLData(
        data_dir=str(data_dir),
        index_path=str(data_dir / "T.index.json"),
        mode="direct",
        batch_size=GLOBAL_BATCH // devices,
        max_val_prompts=4,
    )
    engine = PromptRollouts()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        max_steps=6,
        limit_val_batches=0,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RolloutCallback(engine), Attach(engine, out), DestroyGlooGroup()],
    )
    trainer.fit(module, datamodule=dm)


@pytest.mark.usefixtures("one_thread")
def test_two_gloo_ranks_with_half_the_prompts_each_update_like_one_process(tmp_path: Path) -> None:
    data_dir = write_two_item_catalog(tmp_path / "data")
    run(data_dir, tmp_path / "one", 1)
    run(data_dir, tmp_path / "two", 2)
    one = torch.load(tmp_path / "one" / "rank0.pt")
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt") for r in range(2)]
    assert one["step"] == 6 and all(r["step"] == 6 for r in ranks)  # the same optimizer steps everywhere
    moved = sum(float((a - b).abs().max()) for a, b in zip(one["params"], one["start"]))
    assert moved > 1e-3  # the updates changed the weights
    for a, b in zip(ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(a, b)  # the ranks stay identical
    for a, b in zip(one["params"], ranks[0]["params"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_srpo_refuses_a_sharded_strategy_across_processes() -> None:
    """Its gradient sum needs whole replicas: FSDP over several processes is an error before training."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    module = SRPOModule(backbone="tiny", tiny=TINY)
    module._trainer = SimpleNamespace(world_size=2, strategy=FSDPStrategy())
    with pytest.raises(ValueError, match="needs a strategy that keeps whole replicas .* got FSDPStrategy"):
        module.setup("fit")
