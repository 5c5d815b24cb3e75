import pytest

from tests.conftest import ROOT, load_module


def load_recipe(name: str):
    return load_module(ROOT / "recipes" / f"{name}.py", f"recipe_{name}")


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
