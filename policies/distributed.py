"""One training job on one process or many: the process group, each rank's device, and how a batch is split.

``torchrun --nproc_per_node=N scripts/train.py ...`` starts N copies of the script with ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` set; :func:`setup` joins them into one process group (NCCL on CUDA, gloo on CPU). A plain
``python scripts/train.py`` is world size 1: nothing is initialised and every collective here returns at once.

The batch of one optimiser step (:class:`BatchLayout`)::

    global batch (G = optim.batch_size x optim.grad_accum_steps samples, drawn by (seed, step): the same on every rank)
    | shard 0 | shard 1 | ... | shard S-1 |        S shards of G / S samples, in order
    shard k runs on rank k % N as that rank's micro-batch k // N; gradients are averaged over all S shards

With S > 1 every shard draws its random numbers (flow-matching noise, crops, augmentation) from torch's generators
seeded by (seed, step, k), so a run's losses depend on S, never on how the shards are spread over processes: two
processes with batch_size B give the same losses as one process with batch_size B/2 and grad_accum_steps 2 (up to
floating-point reduction order), and a checkpoint resumes on another number of processes along the same curve as long
as N divides S. S = N x grad_accum_steps is fixed when a run starts and kept in its checkpoints. S = 1 (one process, no
accumulation) draws from the global generators as a plain training loop does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

# Rank 0 alone collects demonstrations and evaluates while the others wait at a barrier: long, so the collectives'
# timeout is far above torch's default (30 min for gloo, 10 min for NCCL).
TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its node) and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that collects demos, writes checkpoints, logs to W&B and evaluates."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether there are several processes (collectives do something)."""
        return self.world_size > 1


def world_from_env(env: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment variables (``(0, 0, 1)`` when unset).

    Raises:
        ValueError: a variable is not an integer, or the rank is outside ``[0, WORLD_SIZE)``.
    """
    try:
        rank, local, world = (int(env.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1)))
    except ValueError as err:
        raise ValueError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them): {err}") from err
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, local, world


def setup(device: torch.device) -> DistContext:
    """Joins the torchrun process group (if any) and returns this process's context.

    ``device`` is the run's resolved device: on CUDA each rank takes ``cuda:<LOCAL_RANK>`` and the group uses NCCL,
    on CPU gloo. With ``WORLD_SIZE`` unset or 1 nothing is initialised.

    Raises:
        ValueError: a CUDA run asks for more processes on a node than it has GPUs.
    """
    rank, local, world = world_from_env()
    if world == 1:
        return DistContext(device=device)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPUs: start at most "
                             f"that many processes per node (torchrun --nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": device} if backend == "nccl" else {}))
    return DistContext(rank, local, world, device)


def shutdown(ctx: DistContext, wait: bool = True) -> None:
    """Leaves the process group; with ``wait`` after a last barrier, so no rank exits while another still needs it
    (pass ``wait=False`` on the way out of an error: the other ranks may never reach it)."""
    if ctx.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Waits until every rank reaches this point (nothing on one process)."""
    if ctx.enabled:
        dist.barrier()


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's ``value`` (any picklable object), on every rank."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(values: Mapping[str, float], ctx: DistContext) -> dict[str, float]:
    """Each float of ``values`` averaged over the ranks (every rank must pass the same keys in the same order)."""
    if not ctx.enabled:
        return dict(values)
    sums = torch.tensor(list(values.values()), dtype=torch.float64, device=ctx.device)
    dist.all_reduce(sums)
    return {k: float(v) / ctx.world_size for k, v in zip(values, sums.tolist())}


def check_same_on_all_ranks(tensors: Mapping[str, torch.Tensor], what: str, ctx: DistContext) -> None:
    """Raises ``RuntimeError`` naming ``what`` and the first differing tensor unless every rank holds equal ``tensors``.

    Compares per-tensor checksums (sum and sum of |x| in float64) through a min and a max reduction: cheap enough
    for every checkpoint.
    """
    if not ctx.enabled:
        return
    names = list(tensors)
    sums = torch.stack([torch.stack([t.detach().double().sum(), t.detach().double().abs().sum()])
                        for t in tensors.values()]).to(ctx.device)
    low, high = sums.clone(), sums.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    differs = (low != high).any(dim=1).nonzero().flatten().tolist()
    if differs:
        raise RuntimeError(f"{what} differ across the {ctx.world_size} processes (first: {names[differs[0]]!r}); "
                           f"data-parallel replicas must stay identical")


@dataclass(frozen=True)
class BatchLayout:
    """How one optimiser step's global batch is cut into ``n_shards`` and spread over the ranks (module docstring).

    Raises:
        ValueError: the global batch is not divisible into the shards, or the shards over the ranks (names both).
    """

    global_batch: int  # G = optim.batch_size x optim.grad_accum_steps, samples per optimiser step
    n_shards: int  # S
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.global_batch % self.n_shards:
            raise ValueError(f"the global batch of {self.global_batch} samples (optim.batch_size x "
                             f"optim.grad_accum_steps) does not split into {self.n_shards} equal shards")
        if self.n_shards % self.world_size:
            raise ValueError(f"{self.n_shards} batch shards do not spread evenly over {self.world_size} processes")

    @classmethod
    def for_run(cls, batch_size: int, grad_accum_steps: int, ctx: DistContext, n_shards: int | None = None) -> BatchLayout:
        """The layout of a run on ``ctx``'s processes; ``n_shards`` is a resumed run's own (kept when it fits).

        Raises:
            ValueError: ``batch_size`` is not divisible by the number of processes (both named).
        """
        if batch_size % ctx.world_size:
            raise ValueError(f"optim.batch_size={batch_size} must be divisible by the number of processes "
                             f"({ctx.world_size}, torchrun --nproc_per_node): each takes batch_size / "
                             f"{ctx.world_size} samples per micro-batch")
        fresh = ctx.world_size * grad_accum_steps
        global_batch = batch_size * grad_accum_steps
        if n_shards is not None and n_shards % ctx.world_size == 0 and global_batch % n_shards == 0:
            fresh = n_shards
        elif n_shards is not None and n_shards != fresh:
            print(f"note: the checkpoint's batch of {n_shards} shards does not spread over {ctx.world_size} "
                  f"processes; continuing with {fresh} shards (other random draws, the same data)")
        return cls(global_batch, fresh, ctx.rank, ctx.world_size)

    @property
    def shard_size(self) -> int:
        """Samples per shard (per micro-batch)."""
        return self.global_batch // self.n_shards

    @property
    def shards(self) -> list[int]:
        """The shards this rank runs, in micro-batch order."""
        return list(range(self.rank, self.n_shards, self.world_size))

    def rank_indices(self, global_indices: torch.Tensor) -> torch.Tensor:
        """This rank's samples of ``global_indices`` (length ``global_batch``), its shards concatenated in order."""
        size = self.shard_size
        return torch.cat([global_indices[k * size:(k + 1) * size] for k in self.shards])


def shard_seed(seed: int, step: int, shard: int) -> int:
    """The seed of shard ``shard`` at optimiser step ``step`` of a run seeded ``seed`` (a 63-bit integer)."""
    return int(np.random.SeedSequence([seed, step, shard]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@contextmanager
def shard_rng(layout: BatchLayout, seed: int, step: int, shard: int, device: torch.device) -> Iterator[None]:
    """Inside: torch's generators seeded for (seed, step, shard) when ``layout`` has several shards; outside, the
    global generators continue as if the block had not run. With one shard: the global generators, untouched."""
    if layout.n_shards == 1:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(shard_seed(seed, step, shard))
        yield
