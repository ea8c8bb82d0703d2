"""Data-parallel training of one run under ``torchrun`` (gloo on CPU, NCCL on GPUs).

Every rank draws the *global* batch from the same random streams (data indices, noise,
times), so the coupling is solved on the global batch — an exact assignment over all ranks'
points, not per-rank batches as in torchcfm. Only the network work is split: ``ShardedNet``
evaluates the rank's rows and all-gathers the outputs with autograd, so each rank computes the
same global loss; after ``backward`` the gradients are averaged across ranks. The result is
the single-process gradient on the same global batch (up to floating-point summation order):
rank r's gradient is W x (the part flowing through its rows), the mean over ranks is their sum.
Evaluation, records and checkpoints happen on rank 0 only.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> torch.device | None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); returns this rank's
    device (cuda:LOCAL_RANK with CUDA, else cpu), or None when not distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        # rank 0 evaluates (FID can take long) while the others wait at the next collective
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(hours=6))
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def is_main() -> bool:
    return world()[0] == 0


class ShardedNet(nn.Module):
    """``net(x, *times)`` on this rank's rows of the batch, outputs all-gathered (with
    autograd). A batch not divisible by the world size is computed whole on every rank (still
    exact: every rank then holds the full gradient, and the mean over ranks is that)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, *times: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_gather

        rank, size = world()
        b = x.shape[0]
        if size == 1 or b % size:
            return self.net(x, *times)
        sl = slice(rank * b // size, (rank + 1) * b // size)
        local_times = [t[sl] if torch.is_tensor(t) and t.dim() > 0 and t.shape[0] == b else t
                       for t in times]
        out = self.net(x[sl], *local_times)
        return torch.cat(all_gather(out.contiguous()), dim=0)


def average_gradients(params) -> None:
    size = world()[1]
    if size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(size)


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def shutdown() -> None:
    """Wait for every rank, then leave the process group (a rank that exits while gloo's
    threads still run aborts)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
