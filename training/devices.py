"""Where a run computes: the device, the ranks of a DDP run, the precision, and the random state.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK for each of its workers; without them a run is one
process on one device. Every rank holds the same weights: the decisions that must agree (stop
now, is this diverged, is a checkpoint due) are rank 0's, broadcast to the others.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Ranks:
    """This process's device, its rank and how many ranks there are."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_device(choice: str) -> Ranks:
    """--device (auto, cuda, cpu) -> this process's Ranks, joining the process group under torchrun."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but no CUDA GPU is available")
    use_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    if "RANK" not in os.environ:
        return Ranks(torch.device("cuda" if use_cuda else "cpu"))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return Ranks(torch.device("cuda", local), rank, world)
    return Ranks(torch.device("cpu"), rank, world)


def finish(ranks: Ranks) -> None:
    """Every rank waits for the others, then leaves the process group (nothing to do for one rank)."""
    if ranks.world > 1:
        dist.barrier()
        dist.destroy_process_group()


def resolve_precision(device: torch.device, precision: str | None) -> str:
    """auto: bf16 on GPUs and on CPUs with native bf16 (2.0x images/s on this project's AVX512-BF16
    CPU, benchmarks/results/train_speed_cpu.json), fp32 elsewhere (emulated bf16 is slower)."""
    if precision in (None, "auto"):
        native = device.type == "cuda" or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return "bf16" if native else "fp32"
    return precision


def autocast_for(device: torch.device, precision: str):
    """The forward pass's autocast context; the loss is always computed in fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_float(batch_uint8: torch.Tensor, device) -> torch.Tensor:
    return batch_uint8.to(device, non_blocking=True).float().div_(255.0)


def place_dataset(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole (uint8) training set on the GPU when it fits easily (no loader, no copies), pinned
    host memory when it does not; as it is on the CPU."""
    if device.type != "cuda":
        return images
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    if images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0]:
        return images.to(device)
    return images.pin_memory()


def rng_states(device: torch.device, world: int) -> list[dict]:
    """Every rank's random state (the CPU's, and its GPU's), in rank order: what a resumed run
    needs to draw the same augmentations and noise the interrupted one would have."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return [mine]
    states = [None] * world
    dist.all_gather_object(states, mine)
    return states


def restore_rng(state: dict, device: torch.device, rank: int, world: int, seed: int) -> None:
    saved = state.get("rng_ranks")
    if saved and len(saved) == world:
        torch.set_rng_state(saved[rank]["cpu"])
        if device.type == "cuda" and "cuda" in saved[rank]:
            torch.cuda.set_rng_state(saved[rank]["cuda"], device)
        return
    # A checkpoint from another number of ranks (or from before rng_ranks): the interrupted
    # streams cannot be continued, but each rank must still draw its own.
    if world > 1:
        torch.manual_seed(seed + rank + 1_000_003 * state["step"])
    else:
        torch.set_rng_state(state["rng"])


def from_rank0(values: tuple[bool, float], device, world: int) -> tuple[bool, float]:
    """(stop, clock) as rank 0 has them: all ranks stop together, and follow one clock."""
    if world == 1:
        return bool(values[0]), float(values[1])
    t = torch.tensor([float(values[0]), float(values[1])], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    flag, clock = t.tolist()
    return flag > 0, clock


def agree(flag: bool, device, world: int) -> bool:
    """All ranks decide together: rank 0's flag."""
    return from_rank0((flag, 0.0), device, world)[0]


def mean_over_ranks(sums: torch.Tensor, world: int) -> torch.Tensor:
    """An epoch's loss sums averaged over every rank's images (in place), not rank 0's alone."""
    if world > 1:
        dist.all_reduce(sums)
        sums /= world
    return sums
