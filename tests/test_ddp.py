"""Two gloo processes on CPU give the one-process result: same samples per step, same training loss,
same weights, and evaluation that scores every user exactly once (torch's ``DistributedSampler``, which
Lightning inserts by default, repeats users when the count is uneven: see ``test_samplers``).

Training equality needs the DDP gradient (mean over ranks of per-rank mean losses) to equal the
one-process gradient of the joint batch: every user has a full-length history (equal label counts per
row), no dropout, and the global batch divides the training set.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from gream_lit.baselines import SASRec
from gream_lit.baselines.seqrec_data import SeqRecDataModule
from gream_lit.data.samplers import SequentialDistributedSampler, UnrepeatedDistributedSampler

N_USERS, N_ITEMS, MAX_HISTORY = 24, 15, 5
EVAL_USERS = 23  # odd: 2 ranks cannot split it evenly
GLOBAL_BATCH = 8


class DistributedSeqRecData(SeqRecDataModule):
    """``SeqRecDataModule`` with the samplers of ``gream_lit.data.samplers`` (ordered train, unrepeated eval)."""

    def train_dataloader(self) -> DataLoader:
        sampler = SequentialDistributedSampler(self.train_set, self.batch_size)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.valid_set, batch_size=self.eval_batch_size, sampler=UnrepeatedDistributedSampler(self.valid_set)
        )


class SGDSASRec(SASRec):
    """SASRec with plain SGD: Adam turns float-noise gradients (e.g. the attention key bias, whose true
    gradient is zero) into full-size steps, so weights could differ where the data path is identical."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Recorder(L.Callback):
    """Writes, per rank, each training step's rows and loss and the users of each validation batch to JSON."""

    def __init__(self, folder: Path, tag: str) -> None:
        self.folder, self.tag = folder, tag
        self.rows: list[list[list[int]]] = []
        self.losses: list[float] = []
        self.users: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append(batch["history"].tolist())
        self.losses.append(float(outputs["loss"]))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.users += batch["user"].tolist()

    def _dump(self, trainer) -> None:
        record = {"rows": self.rows, "losses": self.losses, "users": self.users}
        (self.folder / f"{self.tag}.rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_train_end(self, trainer, pl_module) -> None:
        self._dump(trainer)


class DestroyGlooGroup(L.Callback):
    """Barrier, then destroy the gloo process group before the workers exit. Lightning registers that
    clean-up at exit for NCCL only; a gloo group left alive lets one rank exit while the other's gloo
    threads still hold the pair, which aborts it ("terminate called without an active exception")."""

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def read_ranks(folder: Path, tag: str, world: int) -> list[dict]:
    return [json.loads((folder / f"{tag}.rank{r}.json").read_text()) for r in range(world)]


def write_catalog(folder: Path) -> Path:
    """Random full-length sequences (history of MAX_HISTORY + 3 items) in the LC-Rec json format."""
    rng = random.Random(0)
    sequences = {str(u): [rng.randrange(N_ITEMS) for _ in range(MAX_HISTORY + 3)] for u in range(N_USERS)}
    folder.mkdir()
    (folder / "toy.inter.json").write_text(json.dumps(sequences))
    (folder / "toy.item.json").write_text(json.dumps({str(i): {"title": f"item {i}"} for i in range(N_ITEMS)}))
    return folder


def trainer(root: Path, devices: int, recorder: Recorder, **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder, DestroyGlooGroup()],
        **kwargs,
    )


def data(folder: Path, world: int, cls: type[SeqRecDataModule] = DistributedSeqRecData) -> SeqRecDataModule:
    return cls(
        str(folder),
        max_history=MAX_HISTORY,
        batch_size=GLOBAL_BATCH // world,
        eval_batch_size=4,
        max_eval_users=EVAL_USERS,
    )


def test_two_gloo_processes_train_and_evaluate_like_one(tmp_path):
    folder = write_catalog(tmp_path / "toy")
    L.seed_everything(0)
    one = SGDSASRec(hidden=16, layers=1, heads=2, dropout=0.0, lr=0.5, n_items=N_ITEMS, max_len=MAX_HISTORY)
    two = SGDSASRec(hidden=16, layers=1, heads=2, dropout=0.0, lr=0.5, n_items=N_ITEMS, max_len=MAX_HISTORY)
    two.load_state_dict(one.state_dict())

    # validation only after the last step, so it scores the final weights
    fit_kwargs = dict(max_epochs=2, num_sanity_val_steps=0, check_val_every_n_epoch=2)
    trainer(tmp_path, 1, Recorder(tmp_path, "fit1"), **fit_kwargs).fit(one, datamodule=data(folder, 1))
    ddp = trainer(tmp_path, 2, Recorder(tmp_path, "fit2"), **fit_kwargs)
    ddp.fit(two, datamodule=data(folder, 2))  # ddp_spawn copies rank 0's weights and metrics back
    [single] = read_ranks(tmp_path, "fit1", 1)
    ranks = read_ranks(tmp_path, "fit2", 2)

    # curriculum order: step t of 2 ranks = rank 0's slice then rank 1's slice of step t of 1 process
    assert len(single["rows"]) == len(ranks[0]["rows"]) == len(ranks[1]["rows"]) == 2 * N_USERS // GLOBAL_BATCH
    for step, rows in enumerate(single["rows"]):
        assert ranks[0]["rows"][step] + ranks[1]["rows"][step] == rows
    # same loss curve (mean of the two ranks' means = joint mean) and same weights after training
    ddp_losses = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"])]
    assert ddp_losses == pytest.approx(single["losses"], abs=1e-5)
    for name, weight in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], weight, atol=1e-5, rtol=1e-5, msg=name)

    # evaluation of the same weights: every user scored exactly once over the ranks, metrics of one
    # process (equal up to float32 rounding of the float64 sums, which the ranks add in another order)
    assert sorted(ranks[0]["users"] + ranks[1]["users"]) == sorted(single["users"])
    assert len(set(single["users"])) == EVAL_USERS
    ddp_metrics = {k: float(v) for k, v in ddp.callback_metrics.items() if "/val/" in k}
    [one_process] = trainer(tmp_path, 1, Recorder(tmp_path, "val1")).validate(two, datamodule=data(folder, 1))
    assert len(ddp_metrics) == 9 and ddp_metrics == pytest.approx(one_process, rel=1e-6)
