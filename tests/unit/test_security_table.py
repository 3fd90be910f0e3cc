"""SECURITY.md's attack table is generated from the attack tests (tools/security_table.py):
the committed table must list exactly the tests marked `@pytest.mark.attack`, each blocked."""

from __future__ import annotations

from tools.security_table import (END, SECURITY_MD, START, Attack, attacks_in_tests, check,
                                  render, table_rows)


def test_the_committed_table_lists_exactly_the_attack_tests() -> None:
    attacks = attacks_in_tests()
    assert len(attacks) >= 20
    assert check(SECURITY_MD.read_text(), attacks) == []


def test_every_attack_in_the_committed_table_was_blocked() -> None:
    rows = table_rows(SECURITY_MD.read_text())
    assert rows and all(row["result"].startswith("blocked") for row in rows), \
        [row for row in rows if not row["result"].startswith("blocked")]


def test_a_new_attack_test_without_a_row_is_reported() -> None:
    attacks = attacks_in_tests()
    extra = Attack("tests/integration/test_x.py::test_new", "a new attack", "somewhere", "?")
    text = render(attacks, {a.test: {"passed": 1, "failed": 0, "skipped": 0} for a in attacks})
    assert text.startswith(START) and text.endswith(END)
    assert check(text, attacks) == []
    assert check(text, attacks + [extra]) == [f"missing from the table: {extra.test}"]
    assert "**FAILED** 1/1" in render([extra], {extra.test: {"passed": 0, "failed": 1,
                                                             "skipped": 0}})
