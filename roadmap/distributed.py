"""Join a process group for multi-process training (torchrun, or the tasks of a submitit job).

torchrun --nproc_per_node=N -m roadmap run ...   sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; `init_distributed` reads them. A multi-task submitit
job exports the same variables first (`init_from_submitit`).
"""

import os

import torch
import torch.distributed

from .env import Dist, env_int, resolve_device
from .errors import RoadmapError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def init_distributed(device: str = "auto") -> Dist:
    """Init the default process group from the environment: NCCL on CUDA, gloo on the CPU."""
    missing = [k for k in ENV_VARS if not os.environ.get(k, "").strip()]
    if missing:
        raise RoadmapError(
            f"multi-process run without {', '.join(missing)} in the environment; "
            "launch it with torchrun --nproc_per_node=N -m roadmap run ..."
        )
    dist = Dist(world_size=env_int("WORLD_SIZE", 1, 1), rank=env_int("RANK", 0), local_rank=env_int("LOCAL_RANK", 0))
    if dist.rank >= dist.world_size:
        raise RoadmapError(
            f"RANK={dist.rank} is not below WORLD_SIZE={dist.world_size}; ranks run from 0 to WORLD_SIZE - 1"
        )
    if resolve_device(device).type == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            raise RoadmapError(
                f"local rank {dist.local_rank} has no GPU ({torch.cuda.device_count()} "
                "visible); start at most one process per GPU"
            )
        torch.cuda.set_device(dist.local_rank)  # NCCL's collectives use the current device
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(backend, init_method="env://", rank=dist.rank, world_size=dist.world_size)
    return dist


def init_from_submitit(device: str = "auto") -> Dist:
    """Dist of this task of a submitit job: one process group over all its tasks (when > 1)."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks == 1:
        return Dist()
    # Every task sees every GPU of its node and takes cuda:local_rank, as under torchrun.
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return init_distributed(device)


def shutdown(dist: Dist):
    if dist.world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
