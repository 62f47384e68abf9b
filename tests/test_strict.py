"""A service the tests need being down fails the run under ``scripts/test`` and CI, never a silent skip."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, require_service


@pytest.mark.parametrize(("env", "outcome"), [({"SPINLINE_STRICT": "1"}, pytest.fail.Exception),
                                               ({"CI": "true"}, pytest.fail.Exception),
                                               ({}, pytest.skip.Exception)])
def test_down_service_fails_when_strict(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                        outcome: type[BaseException]) -> None:
    for v in ("CI", "SPINLINE_STRICT"):
        monkeypatch.delenv(v, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with socket.socket() as s:  # bound, never listening: a connect is refused
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
        with pytest.raises(outcome, match="not reachable"):
            require_service("Nothing", "127.0.0.1", port)


def test_the_test_command_is_strict() -> None:
    text = (ROOT / "scripts" / "test").read_text()
    assert "export SPINLINE_STRICT=1" in text
    # and it runs the layer contracts (scripts/check) before pytest
    assert text.index("scripts/check") < text.index("pytest")
    assert "lint-imports" in (ROOT / "scripts" / "check").read_text()


def test_no_importorskip_of_our_own_modules() -> None:
    """A broken import of spinline must fail, not skip."""
    r = subprocess.run(["grep", "-rn", "importorskip(.spinline", str(ROOT / "tests")], capture_output=True,
                       text=True)
    hits = [h for h in r.stdout.splitlines() if Path(h.split(":", 1)[0]).name != Path(__file__).name]
    assert hits == []
