"""Start-up stays light: `hfpull --help`, `--version` and a no-op offline `get` must not load
the modules that made the CLI take half a second (rich, requests/urllib3/ssl, the engine,
pydantic through typer 0.29). Wall times are in benchmarks/bench_startup.py; these tests
only check what is imported, so a later top-level import cannot slow every command down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, RunCli, cli_env
from tests.fakehub import FakeHub

# Runs the real entry point in a fresh interpreter and records what it imported.
PROBE = """
import json, os, sys
from hfpull.cli import main
sys.argv = ["hfpull", *sys.argv[1:]]
code = None
try:
    main()
except SystemExit as stop:
    code = stop.code
with open(os.environ["PROBE_OUT"], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""

WIRE = ("requests", "urllib3", "ssl", "http.client", "hfpull.hub.http", "hfpull.engine.blob")
TERMINAL = ("rich", "rich.console", "typer.rich_utils")
CORE = ("hfpull.pull", "hfpull.engine", "hfpull.serve", "aiohttp", "huggingface_hub")


def probe(tmp_path: Path, *args: str, **env: str) -> tuple[int | None, set[str]]:
    out = tmp_path / "probe.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=cli_env(tmp_path, PROBE_OUT=str(out), **env), cwd=ROOT, capture_output=True,
        timeout=60, check=False,
    )  # fmt: skip
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


def test_importing_the_package_and_the_cli_loads_no_heavy_module(tmp_path: Path) -> None:
    script = (
        "import sys, json, hfpull, hfpull.cli; "
        "print(json.dumps(sorted(sys.modules)), hfpull.__version__ != '')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=cli_env(tmp_path),
    )  # fmt: skip
    modules_json, has_version = done.stdout.rsplit(" ", 1)
    modules = set(json.loads(modules_json))
    assert has_version.strip() == "True"
    assert loaded(modules, WIRE + TERMINAL + CORE + ("pydantic",)) == []


def test_the_public_api_still_resolves_lazily(tmp_path: Path) -> None:
    script = "import hfpull, hfpull.pull; assert hfpull.get is hfpull.pull.get; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
        env=cli_env(tmp_path),
    )  # fmt: skip
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], ["get", "--help"], ["serve", "--help"]]
)
def test_help_and_version_load_no_heavy_module(tmp_path: Path, args: list[str]) -> None:
    code, modules = probe(tmp_path, *args)
    assert code in (0, None)
    assert loaded(modules, WIRE + TERMINAL + CORE) == []


def test_help_is_plain_and_readable(run_cli: RunCli) -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "pip install 'hfpull[serve]'" in text  # no rich markup escape left in it
    assert "--max-cache-size" in result.stdout and "╭" not in result.stdout


def test_a_no_op_offline_get_never_loads_the_wire(
    run_cli: RunCli, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_repo("org/model", {"config.json": b"{}", "w.safetensors": os.urandom(4096)})
    cache = tmp_path / "c"
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url)
    assert run_cli("get", "org/model", "--cache-dir", str(cache), env=env).returncode == 0
    code, modules = probe(
        tmp_path, "get", "org/model", "--cache-dir", str(cache), HF_HUB_OFFLINE="1"
    )
    assert code == 0
    assert "hfpull.pull" in modules  # the probe did run the get
    assert loaded(modules, WIRE + TERMINAL) == []
    # typer 0.29 coerces every option with pydantic (~120 ms); pyproject keeps typer < 0.29.
    assert "pydantic" not in modules
