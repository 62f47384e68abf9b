"""No module over ~400 lines without a reason: a long module says why in a ``Size:`` line of its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 420


def test_long_modules_state_why() -> None:
    unexplained = []
    for path in sorted((ROOT / "src" / "spinline").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= LIMIT:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Size:" not in doc:
            unexplained.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not unexplained, "split these, or say why they are long in a 'Size:' line: " + ", ".join(unexplained)
