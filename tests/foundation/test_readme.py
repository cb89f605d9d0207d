"""The README documents every setting and opens with the two commands."""

from __future__ import annotations

from moodwire.settings import REPO_ROOT, Settings
from moodwire.settings_doc import BEGIN, END

README = (REPO_ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table() -> None:
    table = README[README.index(BEGIN) : README.index(END)]
    missing = [
        f"MOODWIRE_{name.upper()}"
        for name in Settings.model_fields
        if f"`MOODWIRE_{name.upper()}`" not in table
    ]
    assert missing == [], (
        f"not in README.md: {missing}; run `.venv/bin/python -m moodwire.settings_doc --write`"
    )


def test_every_setting_has_a_description() -> None:
    assert [n for n, f in Settings.model_fields.items() if not f.description] == []


def test_readme_opens_with_make_demo_and_make_test() -> None:
    head = README[: README.index("## ")]
    assert "make demo" in head and "make test" in head
