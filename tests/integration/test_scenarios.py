"""Every bundled scenario runs green, through the same path as `python boot.py SCENARIO`."""

from __future__ import annotations

from pathlib import Path

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


def test_the_readme_scenario_runs_as_written(tmp_path, capsys) -> None:
    readme = (Path(boot.__file__).parent / "README.md").read_text()
    section = readme.split("### Writing a scenario", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.splitlines()) <= 20, "the README promises a short scenario"
    (tmp_path / "mine.py").write_text(code)
    rc = boot.main([str(tmp_path / "mine.py"), "--out", str(tmp_path / "out"), "--name", "mine",
                    "--state-dir", str(tmp_path / "state"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "== mine: PASSED" in out and "ok   attestation verified" in out
    assert (tmp_path / "out" / "verdict.json").exists()
