import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A local parquet folder (train/test splits) of small class-dependent synthetic images."""
    from spectral_ssl.data import synthetic_dataset

    folder = tmp_path_factory.mktemp("tiny_data")
    synthetic_dataset(num_rows=96, image_size=32, num_classes=4, seed=0).to_parquet(
        str(folder / "train-00000-of-00001.parquet"))
    synthetic_dataset(num_rows=48, image_size=32, num_classes=4, seed=1).to_parquet(
        str(folder / "test-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="session")
def pretrain():
    return load_recipe("pretrain")


@pytest.fixture(scope="session")
def linear_probe_recipe():
    return load_recipe("linear_probe")
