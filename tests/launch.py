"""Multi-process test launcher: accelerate's ``debug_launcher`` environment, but spawned processes.

``accelerate.debug_launcher`` always forks. A forked child deadlocks inside the first torch op once the parent
(pytest, having run other tests) has used torch's thread pools or autograd (observed here: a hang in
``cross_entropy``). Spawned children start clean. Same gloo/CPU environment as debug_launcher, on a free port.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_launcher(function: Callable, args: tuple = (), num_processes: int = 2) -> None:
    """Run ``function(*args)`` in ``num_processes`` CPU processes with a gloo process group (via Accelerator)."""
    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    with tempfile.TemporaryDirectory() as rdv_dir, patch_environment(
        world_size=num_processes, master_addr="127.0.0.1", master_port=str(_free_port()),
        accelerate_mixed_precision="no", accelerate_debug_rdv_file=f"{rdv_dir}/rdv", accelerate_use_cpu="yes",
        gloo_socket_ifname="lo", omp_num_threads="1",
    ):
        start_processes(PrepareForLaunch(function, debug=True), args=args, nprocs=num_processes,
                        start_method="spawn")


def save_rank_result(result: object, out_dir: str) -> None:
    """In a spawned worker: write this rank's result to ``out_dir/rank{r}.pt``, then leave together and tear gloo
    down (a rank exiting with live gloo threads aborts; seen on CI)."""
    import os

    import torch

    torch.save(result, os.path.join(out_dir, f"rank{torch.distributed.get_rank()}.pt"))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def load_rank_results(out_dir, num_processes: int = 2) -> list:
    """The results the workers saved with ``save_rank_result``, in rank order."""
    from pathlib import Path

    import torch

    return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(num_processes)]
