"""Shared fixtures."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub; hub tests point HF_ENDPOINT at a local server
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from spectral_ssl import cpu_threads  # noqa: E402  (does not import torch)

# the recipes' CPU thread policy, before torch loads libgomp: tests run as users' training does, and subprocesses
# inherit the short spin (GOMP_SPINCOUNT)
cpu_threads.configure()

import pytest  # noqa: E402
import torch  # noqa: E402

import spectral_ssl  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
BENCHMARKS = ROOT / "benchmarks"


def load_module(path: Path, name: str | None = None):
    """A script, benchmark or recipe imported by path (they are not a package), registered in sys.modules (its
    dataclasses resolve annotations there), with scripts/ and benchmarks/ on sys.path while it imports: they import
    their siblings (``harness``, ``demo``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(SCRIPTS))
        mp.syspath_prepend(str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(name or path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture()
def hub_server(monkeypatch, tmp_path):
    """Point huggingface_hub (this process and subprocesses) at a fresh local Hub with an empty cache."""
    from huggingface_hub import constants

    from tests.fake_hub import serve

    server, url, store = serve()
    cache = tmp_path / "hf_home"
    env = {"HF_ENDPOINT": url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_HOME": str(cache),
           "HF_TOKEN": "hf_fake_token_for_tests", "HF_HUB_DISABLE_TELEMETRY": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # huggingface_hub reads these at import time
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HOME", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    yield store
    server.shutdown()
