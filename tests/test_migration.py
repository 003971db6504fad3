"""Every code example of docs/migration.rst runs (a broken example fails CI)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "migration.rst"
TEXT = PAGE.read_text()
# ``.. code-block:: python`` then a blank line, then the indented block.
BLOCKS = [
    textwrap.dedent(match.group(2))
    for match in re.finditer(
        r"^( *)\.\. code-block:: python\n\n((?:\1   .*\n|\n)+)", TEXT, flags=re.MULTILINE
    )
]


def test_the_page_has_its_examples():
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i, _ in enumerate(BLOCKS)])
def test_migration_example_runs(block):
    exec(compile(block, str(PAGE), "exec"), {"__name__": "migration"})
