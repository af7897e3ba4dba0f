"""What every training pipeline shares: device choice, autocast, the LR schedule, the optimizer step."""
from __future__ import annotations

import math
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist


class DeviceError(ValueError):
    """The requested device is not available."""


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but no CUDA GPU is available")
    return torch.device(name)


def join_process_group(device: str) -> tuple[torch.device, bool]:
    """(this rank's device, whether this call created the process group); joins torchrun's group if any.

    Under torchrun a plain "cuda" (or "auto") means this rank's GPU (LOCAL_RANK)."""
    world, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda" and dev.index is None:  # set_device needs an index
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1 or dist.is_initialized():
        return dev, False
    if dev.type == "cuda":  # device_id binds NCCL to this rank's GPU (else every barrier warns it guesses)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dist.init_process_group("gloo")
    return dev, True


def autocast_for(device: torch.device):
    """bf16 autocast on a GPU; full precision on the CPU (where bf16 matmuls are slow and the scan is fp32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def cosine_schedule(warmup: int, total: int):
    """LR multiplier: linear warm-up, then cosine decay to 10% (as in the Mamba/GPT-3 recipes)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def optimizer_step(model: torch.nn.Module, optimizer, scheduler, grad_clip: float) -> None:
    """Clip (grad_clip > 0), step the optimizer and the LR schedule, clear the gradients."""
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
