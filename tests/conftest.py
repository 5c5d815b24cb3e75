"""Shared fixtures. Importing spectral_ssl first runs the torchvision shim before timm/transformers load."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub; hub tests point HF_ENDPOINT at a local server
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import spectral_ssl  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
