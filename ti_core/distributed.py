"""The processes one run is spread over, as the trainer asks about them: how many, which one this is, its share of
a batch, and a sum across all of them. A single process (no torch.distributed group) is `World()`: one process,
rank 0, and every sum is the value itself, so it pays nothing.

Under torchrun the command line starts the group from the environment torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT): NCCL when the model is on a GPU, gloo on the CPU. From Python, initialise
the group yourself (torch.distributed.init_process_group) before calling `train`; it finds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch

from .errors import SettingError


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    device: str = "cpu"  # where the collectives run: NCCL reduces only GPU tensors, gloo CPU ones

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that saves, previews and reports."""
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This process's contiguous part of `count` items; the parts of all ranks cover them once, sizes differing
        by at most one."""
        return slice(self.rank * count // self.size, (self.rank + 1) * count // self.size)

    def sum_(self, tensors: list) -> None:
        """Replace each tensor by its sum over all processes, in place, with one collective for all of them."""
        if self.size == 1:
            return
        import torch.distributed as dist

        flat = torch.cat([t.detach().reshape(-1).to(self.device, torch.float64) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        start = 0
        for t in tensors:
            t.copy_(flat[start:start + t.numel()].view_as(t))
            start += t.numel()

    def sum(self, value: float) -> float:
        """`value` summed over all processes."""
        if self.size == 1:
            return value
        box = torch.tensor([value], dtype=torch.float64)
        self.sum_([box])
        return float(box)

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any: a decision all ranks must take together (stop now),
        or they would wait for each other forever."""
        if self.size == 1:
            return flag
        return self.sum(1.0 if flag else 0.0) > 0


@contextlib.contextmanager
def main_speaks(world: World, logger: str = "ti_core"):
    """For the block, only the main process logs below errors: the others' warnings and notes are its own copies."""
    log = logging.getLogger(logger)
    level = log.level
    if not world.is_main:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def current() -> World:
    """The torch.distributed group this process is in, or a single process when none is initialised."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return World()
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    return World(dist.get_world_size(), dist.get_rank(), device)


def launched_size() -> int:
    """How many processes torchrun (or another launcher setting WORLD_SIZE) started for this run; 1 without one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SettingError(f"WORLD_SIZE {os.environ['WORLD_SIZE']!r} is not a number; "
                           "start the run with torchrun, which sets it.") from None


@contextlib.contextmanager
def process_group(device: str):
    """Under torchrun with more than one process: the group joined for the block (NCCL for a CUDA `device`, gloo
    otherwise), and the device this rank computes on (`cuda` becomes `cuda:LOCAL_RANK`, one GPU per rank).
    Otherwise, or when the caller already started a group, nothing is started and `device` is kept."""
    import torch.distributed as dist

    if launched_size() == 1 or dist.is_initialized():
        yield device
        return
    if device.startswith("cuda"):
        if device != "cuda":
            raise SettingError(f"--device {device} names one GPU for all {launched_size()} processes; under "
                               "torchrun pass --device cuda (or none), and each process takes its own, "
                               "cuda:LOCAL_RANK (choose the GPUs with CUDA_VISIBLE_DEVICES).")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(device))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    try:
        yield device
    finally:
        dist.destroy_process_group()
