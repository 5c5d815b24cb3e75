"""Packaging: what the installed package reads is shipped, and every extra a message names exists."""

import re
import sys

import pytest

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PACKAGE = ROOT / "spectral_ssl"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_non_python_file_of_the_package_is_package_data():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["spectral_ssl"]
    data = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data, "the model card template is package data"
    for path in data:
        rel = path.relative_to(PACKAGE)
        assert any(rel.match(pattern) for pattern in patterns), f"{rel} is not in [tool.setuptools.package-data]"


def test_every_extra_named_in_a_message_is_declared():
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    named = {m for path in PACKAGE.rglob("*.py") for m in re.findall(r"spectral[_-]ssl\[(\w+)\]", path.read_text())}
    assert named and named <= extras, named - extras


def test_the_lightning_callback_without_lightning_is_one_line_naming_the_extra(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    from spectral_ssl.integrations import lightning

    with pytest.raises(ImportError, match=re.escape("pip install 'spectral_ssl[lightning]'")) as info:
        lightning._callback_base()
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained ModuleNotFoundError
