"""The README documents every setting and opens with the two commands."""

from __future__ import annotations

from moodwire.settings import REPO_ROOT, Settings
from moodwire.settings_doc import BEGIN, END, is_test_only, settings_for_tests_only

README = (REPO_ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    table = README[README.index(BEGIN) : README.index(END)]
    missing = [
        f"MOODWIRE_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if not is_test_only(field) and f"`MOODWIRE_{name.upper()}`" not in table
    ]
    assert missing == [], (
        f"not in README.md: {missing}; run `.venv/bin/python -m moodwire.settings_doc --write`"
    )


def test_fault_injection_is_out_of_the_settings_table_and_documented_as_test_only() -> None:
    hidden = settings_for_tests_only()
    # Every fault_* switch is marked test-only, whatever its prefix.
    faults = [f"MOODWIRE_{n.upper()}" for n in Settings.model_fields if "fault" in n]
    assert faults and sorted(hidden) == sorted(faults)
    table = README[README.index(BEGIN) : README.index(END)]
    tests_section = README[README.index("\n## Tests") :]
    for name in hidden:
        assert f"`{name}`" not in table
        assert f"`{name}`" in tests_section, f"{name} is not documented under ## Tests"


def test_every_setting_has_a_description() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_readme_opens_with_make_demo_and_make_test() -> None:
    head = README[: README.index("## ")]
    assert "make demo" in head and "make test" in head
