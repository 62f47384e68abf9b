"""The CLIs' one site-loading helper: a bad file or an unknown mill exits 2 with the problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from spinline.core.site_cli import load_site_or_exit, mill_or_exit


def test_good_site_and_ports(mill_yaml: Path) -> None:
    s = load_site_or_exit(mill_yaml, ports="5020:41234")
    assert mill_or_exit(s, None).id == s.mills[0].id
    assert mill_or_exit(s, s.mills[0].id) is s.mills[0]


def test_bad_site_file_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "site.yaml"
    bad.write_text("zone: {id: z}\nmills:\n  - id: m1\n    lines: nope\n")
    with pytest.raises(typer.Exit) as e:
        load_site_or_exit(bad)
    assert e.value.exit_code == 2
    assert "site.yaml" in capsys.readouterr().err


def test_unknown_mill_and_bad_ports_exit_2(mill_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = load_site_or_exit(mill_yaml)
    with pytest.raises(typer.Exit):
        mill_or_exit(s, "nowhere")
    assert "'nowhere' is not in the site" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        load_site_or_exit(mill_yaml, ports="5020-1")
    assert "--ports" in capsys.readouterr().err
