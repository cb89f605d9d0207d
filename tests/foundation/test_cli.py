"""`moodwire --help` lists every command with a one-line description."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from moodwire.cli.app import app


def test_every_command_has_a_one_line_description() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert {"stack", "db", "demo"} <= set(commands)
    undocumented = [name for name, cmd in commands.items() if not cmd.get_short_help_str(200)]
    assert undocumented == []


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("stack", "db", "demo"):
        assert f" {name} " in result.output


def test_stack_help_lists_up_down_status() -> None:
    result = CliRunner().invoke(app, ["stack", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert all(f" {name} " in result.output for name in ("up", "down", "status"))
