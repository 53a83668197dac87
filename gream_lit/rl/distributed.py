"""What SRPO needs from the other processes of a data-parallel run, and nothing in one process.

Ranks agree on when to update (kept groups summed), see every kept group (gathered as objects, so
rollouts of different lengths travel as they are), split each optimizer step's rows, and sum their
gradients themselves: the PPO loop takes several optimizer steps per training step, which DDP's own
reducer (one synchronised backward per forward) does not allow, so backward runs under
``block_backward_sync`` and the gradients are reduced here, once per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run (``world == 1``: a single process, every call a no-op)."""

    world: int = 1
    rank: int = 0
    strategy: Any = None

    @classmethod
    def of(cls, module: L.LightningModule) -> Ranks:
        trainer = module._trainer
        if trainer is None or trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(trainer.world_size, trainer.global_rank, trainer.strategy)

    def _device(self) -> torch.device:
        return self.strategy.root_device if dist.get_backend() == "nccl" else torch.device("cpu")

    def sum_tensor(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over ranks (a new tensor on ``values``' device)."""
        if self.world == 1:
            return values
        out = values.detach().to(self._device()).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(values.device)

    def sum(self, value: float) -> float:
        return float(self.sum_tensor(torch.tensor([float(value)], dtype=torch.float64))[0])

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (tensors in it should be on the CPU)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def share(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of ``rows`` (all of them in one process)."""
        return rows if self.world == 1 else rows.tensor_split(self.world)[self.rank]

    @contextlib.contextmanager
    def no_grad_sync(self) -> Iterator[None]:
        """Backward passes that leave gradient reduction to ``sum_grads``."""
        block = getattr(self.strategy, "block_backward_sync", None)
        with block() if self.world > 1 and block is not None else contextlib.nullcontext():
            yield

    def sum_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Each parameter's gradient summed over ranks (a missing one counts as zero), in one reduction."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params]).to(self._device())
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
