"""The README's examples run, and its table of flows matches the registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyroflows.transforms import REGISTRY

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)


@pytest.mark.parametrize(
    "block", PYTHON_BLOCKS, ids=[f"block{i}" for i, _ in enumerate(PYTHON_BLOCKS)]
)
def test_readme_example_runs(block):
    exec(compile(block, str(README), "exec"), {"__name__": "readme"})


def test_readme_has_examples_and_two_quick_start_commands():
    assert len(PYTHON_BLOCKS) >= 3
    quick_start = re.search(r"## Quick start.*?```bash\n(.*?)```", TEXT, flags=re.DOTALL)
    commands = [line for line in quick_start.group(1).splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == ["make demo", "make test"]


def test_readme_table_lists_every_registered_flow():
    listed = set(re.findall(r"^\| `(\w+)` \|", TEXT, flags=re.MULTILINE))
    assert listed == set(REGISTRY)
    for name, spec in REGISTRY.items():
        row = re.search(rf"^\| `{name}` \|(.*)$", TEXT, flags=re.MULTILINE).group(1)
        assert spec.inverse in row, f"README row of {name} does not say its inverse kind"
        assert ("yes" if spec.conditional else "no") in row
