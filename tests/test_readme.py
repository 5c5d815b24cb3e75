"""The README's code runs as written (the front door stays true). A block preceded by ``<!-- readme-test: slow -->``
(a real Lightning or HF Trainer run) is marked slow."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SLOW_MARK = "<!-- readme-test: slow -->"


def python_blocks() -> list[tuple[str, bool]]:
    """Every ```python block and whether the line before it marks it slow."""
    return [(m.group(2), m.group(1) is not None)
            for m in re.finditer(r"(" + re.escape(SLOW_MARK) + r"\n)?```python\n(.*?)```", README.read_text(),
                                 flags=re.S)]


def test_readme_has_a_quick_start_in_code():
    assert python_blocks(), "README.md lost its ```python quick start"


@pytest.mark.parametrize("block", [pytest.param(i, marks=[pytest.mark.slow] if slow else [])
                                   for i, (_, slow) in enumerate(python_blocks())])
def test_python_block_runs(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = python_blocks()[block][0]
    exec(compile(code, f"README.md[python block {block}]", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out  # every block shows the user something
