"""Every shell command in the README runs, as written, in a fresh process (small overrides appended).

The commands are read from README.md itself, so the two cannot drift apart. They run in a scratch folder that looks
like the repository (recipes/ and scripts/ linked in) with the venv's bin first on PATH, against a tiny
Fashion-MNIST-like source and the local fake Hub. ``make ...`` lines are the set-up commands (CI runs them).
"""

import gzip
import json
import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TINY = ["--backbone=test_resnet", "--proj_hidden_dim=32", "--proj_dim=16", "--batch_size=24", "--max_steps=2",
        "--reff_samples=16", "--save_every=2", "--log_every=1", "--shuffle_buffer=64"]


def readme_commands() -> list[str]:
    """Shell lines of the README's ```bash blocks (comments after two spaces and a # dropped), `make` excluded."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():  # a line continued with a backslash is one command
            line = re.sub(r"\s{2,}#.*$", "", line).strip()
            if line and not line.startswith(("#", "make ", "hf auth")):
                lines.append(line)
    return lines


def overrides(command: str) -> list[str]:
    if "recipes/pretrain.py" in command:
        return TINY
    if "recipes/linear_probe.py" in command:
        return ["--max_train_samples=48", "--max_test_samples=24", "--bn_batches=1", "--batch_size=24"]
    if "prepare_fashion_mnist.py" in command:
        return ["--source", "fake_source", "--output", "data/fashion_mnist"]
    return []


def write_idx(path: Path, array: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def fake_fashion_mnist(folder: Path) -> None:
    """Debian-style idx files: 96 train / 48 test 28x28 images of 4 classes (a bright bar whose position is the
    class, plus noise)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n, (images, labels) in ((96, ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")),
                                (48, ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))):
        y = np.arange(n) % 4
        x = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(y):
            x[i, 4 + 5 * label: 8 + 5 * label, 4:24] = 220
        write_idx(folder / images, x)
        write_idx(folder / labels, y)


def image_folder(folder: Path) -> None:
    """An image folder with class sub-folders and no test split (the README's own-images example)."""
    rng = np.random.default_rng(1)
    for label in ("circle", "square"):
        (folder / "train" / label).mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 80, (20, 20), dtype=np.uint8)
            pixels[5:15, 5:15] += 100 if label == "square" else 0
            Image.fromarray(pixels, "L").save(folder / "train" / label / f"{i}.png")


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, hub_server):
    commands = readme_commands()
    assert any(c.startswith("accelerate launch recipes/pretrain.py") for c in commands)
    assert any(c.startswith("python recipes/linear_probe.py") for c in commands)
    for name in ("recipes", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    fake_fashion_mnist(tmp_path / "fake_source")
    image_folder(tmp_path / "my_images")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": "", "ACCELERATE_USE_CPU": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    ranks = [c for c in commands if c.startswith("python -m spectral_ssl.rank")]
    assert ranks, "the README's rank example is no longer a bash block"
    for command in [c for c in commands if c not in ranks] + ranks:  # ranking reads the exports the others write
        args = shlex.split(command) + overrides(command)
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"README command failed: {command}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "outputs" / "fashion_mnist_simclr" / "model.safetensors").is_file()
    assert list((tmp_path / "outputs" / "simclr_tb" / "trackers").rglob("events.out.tfevents.*"))  # --report_to
    assert len(json.loads((tmp_path / "rank_out" / "rank.json").read_text())["scores"]) == 3
