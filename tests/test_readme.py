"""The README's quick start runs as written (the front door stays true)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_quick_start_in_code():
    assert python_blocks(), "README.md lost its ```python quick start"


@pytest.mark.parametrize("block", range(len(python_blocks())))
def test_python_block_runs(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[block], f"README.md[python block {block}]", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out  # every block shows the user something
