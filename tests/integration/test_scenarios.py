"""Every bundled scenario runs green, through the same path as `python boot.py SCENARIO`."""

from __future__ import annotations

import pytest

import boot
from hyperenclave import scenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", [p.stem for p in scenario.bundled()])
def test_bundled_scenario_passes(name: str, tmp_path, capsys) -> None:
    rc = boot.main([name, "--out", str(tmp_path / "out"), "--name", name,
                    "--state-dir", str(tmp_path / "state"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"== {name}: PASSED" in out
    assert any((tmp_path / "out").rglob("serial.log")), "evidence written to --out"


def test_list_names_every_bundled_scenario_with_its_description(capsys) -> None:
    assert boot.main(["--list"]) == 0
    out = capsys.readouterr().out
    for path in scenario.bundled():
        assert path.stem in out
        assert scenario.describe(scenario.load(path.stem)) in out


def test_an_unknown_scenario_is_named_with_the_bundled_ones(capsys) -> None:
    assert boot.main(["no-such-scenario"]) == 1
    err = capsys.readouterr().err
    assert "no scenario file 'no-such-scenario'" in err and "disable-enable" in err
