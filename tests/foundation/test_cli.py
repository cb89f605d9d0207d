"""`moodwire --help` lists every command with a one-line description; bad settings are
one line each, naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from moodwire.cli.app import COMMANDS, app
from moodwire.settings import Settings, get_settings


def test_every_command_has_a_one_line_description() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert {"stack", "db", "demo"} <= set(commands)
    undocumented = [name for name, cmd in commands.items() if not cmd.get_short_help_str(200)]
    assert undocumented == []


def test_the_lazy_command_map_names_every_command_of_the_whole_app() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert set(commands) == set(COMMANDS)


def test_a_command_loads_only_its_own_module() -> None:
    # What `moodwire process` imports before it can join its consumer group counts
    # towards launch-to-first-row; alembic comes only with `moodwire db` and the stack.
    code = (
        "import sys; sys.argv = ['moodwire', 'process', '--help']\n"
        "from moodwire.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('moodwire.cli.')))\n"
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[-2] == "['moodwire.cli.app', 'moodwire.cli.process']"
    assert out[-1] == "False"


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("stack", "db", "demo"):
        assert f" {name} " in result.output


def test_stack_help_lists_up_down_status() -> None:
    result = CliRunner().invoke(app, ["stack", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert all(f" {name} " in result.output for name in ("up", "down", "status"))


def test_bad_settings_name_their_variables_instead_of_a_traceback(tmp_path: Path) -> None:
    env = {
        "MOODWIRE_STATE_DIR": str(tmp_path),
        "MOODWIRE_PARTITIONS": "four",
        "MOODWIRE_LOG_LEVEL": "verbose",
    }
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["stack", "status"], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: invalid setting MOODWIRE_PARTITIONS: ")
    assert lines[0].endswith("(got 'four')")
    assert lines[1].startswith("error: invalid setting MOODWIRE_LOG_LEVEL: ")
    assert "DEBUG, INFO, WARNING, ERROR, CRITICAL" in lines[1]


def test_log_level_is_case_blind_and_a_bare_postgresql_url_gets_psycopg2(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path, log_level=" debug", database_url="postgresql://u@h:5432/db"
    )
    assert settings.log_level == "DEBUG"
    assert settings.database_url == "postgresql+psycopg2://u@h:5432/db"
    assert Settings(state_dir=tmp_path, database_url="postgres://u@h/db").database_url == (
        "postgresql+psycopg2://u@h/db"
    )
