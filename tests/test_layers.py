"""The layer contracts of ``[tool.importlinter]`` hold, and a breach of them fails.

``scripts/check`` (so the test command and CI) runs ``lint-imports`` on the real tree; here the same
contracts run on a copy of the package with one deliberately wrong import written into it, so a
contract that could never fail (a typo in a module name, a layer list that allows everything) is
caught too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts, importing ``spinline`` from ``tree``."""
    shutil.copy(ROOT / "pyproject.toml", cwd / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "spinline", tree / "spinline",
                    ignore=shutil.ignore_patterns("__pycache__", "*.yaml", "*.j2", "*.csv", "*.proto"))
    return tree


def _breach(tree: Path, module: str, line: str) -> None:
    path = tree / Path(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text() + f"\n{line}\n")


def test_real_tree_keeps_every_contract(tmp_path: Path) -> None:
    r = _lint(_copy(tmp_path), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "BROKEN" not in r.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    # carbon reading the cloud's storage again (the breach this contract was written for)
    ("spinline.carbon.factors", "from spinline.cloud.storage.base import RESOLUTION_NS  # noqa",
     "carbon is pure figures"),
    # a connector importing health
    ("spinline.connectors.base", "import spinline.health.features  # noqa", "connectors move bytes"),
    # core reaching up
    ("spinline.core.units", "import spinline.edge.buffer  # noqa", "core imports nothing"),
])
def test_a_wrong_import_breaks_the_contracts(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    _breach(tree, module, line)
    r = _lint(tree, tmp_path)
    print(r.stdout)  # the note of issue 9 shows this output
    assert r.returncode != 0
    assert f"{contract}" in r.stdout and "BROKEN" in r.stdout
    assert module in r.stdout
