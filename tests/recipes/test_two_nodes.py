"""Launching on several GPUs and machines: the accelerate launch configs (recipes/configs/accelerate/) parse and
count their processes, and a two-machine launch with 2x8gpu.yaml runs end to end on localhost (two ``accelerate
launch`` commands, one process each, gloo on the CPU)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spectral_ssl import SpectralSSL
from tests.recipes.test_pretrain import tiny_args

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "configs" / "accelerate"


@pytest.mark.parametrize("name,kind,processes,machines", [
    ("1gpu", "NO", 1, 1),
    ("8gpu", "MULTI_GPU", 8, 1),
    ("2x8gpu", "MULTI_GPU", 16, 2),
])
def test_launch_configs_parse_with_accelerate_and_count_their_processes(name, kind, processes, machines):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))  # refuses unknown keys
    assert (config.distributed_type.value, config.num_processes, config.num_machines) == (kind, processes, machines)
    assert config.mixed_precision == "bf16" and not config.use_cpu and config.machine_rank == 0
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == ["1gpu", "2x8gpu", "8gpu"]  # the README names these


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_machines_on_localhost_train_with_sharded_data_and_export_once(tiny_dataset, tmp_path):
    out, port = tmp_path / "run", _free_port()
    accelerate = Path(sys.executable).with_name("accelerate")
    # CPU and gloo even on a GPU machine (two "machines" on one GPU would clash); one thread per process; this
    # checkout's spectral_ssl (a script's folder, not the working directory, starts its sys.path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    nodes = [subprocess.Popen(
        [str(accelerate), "launch", "--config_file", str(CONFIGS / "2x8gpu.yaml"), "--num_processes=2",
         f"--machine_rank={rank}", "--main_process_ip=127.0.0.1", f"--main_process_port={port}",
         "--mixed_precision=no", str(ROOT / "recipes" / "pretrain.py"),
         *tiny_args(tiny_dataset, out, "--max_steps=3", "--batch_size=8", "--selection=greedy", "--greedy_m=8")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        logs = [node.communicate(timeout=420) for node in nodes]
    finally:
        for node in nodes:
            node.kill()  # only if a node is still running (a hang): a no-op after communicate()
    for rank, (node, (stdout, stderr)) in enumerate(zip(nodes, logs)):
        assert node.returncode == 0, f"machine {rank}:\n{stdout[-2000:]}\n{stderr[-3000:]}"
    (main_out, _), (other_out, _) = logs
    # one run of 2 processes over 2 machines; each holds half of the 96 cached rows
    assert "global batch 16 (2 processes)" in main_out and "(48 rows per process" in main_out
    assert "export written to" in main_out and "export written to" not in other_out  # only rank 0 exports
    assert "pretrain:" in other_out  # accelerator.print: each machine's first process shows the run in its log
    meta = SpectralSSL.from_pretrained(out).metadata
    assert meta["global_batch"] == 16 and meta["steps"] == 3
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 3]  # written once, by rank 0
    assert lines[0]["sel_pool_size"] == 32  # 4 x 8 candidates per rank, gathered over the two machines
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000003"]
