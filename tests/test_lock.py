"""The committed lock is the install: pyproject.toml, uv.lock and .venv agree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _uv() -> str:
    # scripts/setup-venv.sh installs the pinned uv into .uv/; a machine that runs the
    # tests another way must have that same uv on its PATH.
    local = ROOT / ".uv" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    assert found is not None, "uv not found: run scripts/test, which installs it into .uv/"
    return found


def test_lock_matches_pyproject() -> None:
    """`uv lock --check` passes: nobody edited the dependencies without re-locking."""
    run = subprocess.run(
        [_uv(), "lock", "--check", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_pinned_uv_is_the_required_one() -> None:
    """scripts/uv-requirements.txt installs the uv that pyproject.toml requires."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = pyproject["tool"]["uv"]["required-version"]
    pinned = re.search(r"^uv==(\S+)", (ROOT / "scripts/uv-requirements.txt").read_text(), re.M)
    assert pinned is not None
    assert required == f"=={pinned.group(1)}"


def test_installed_versions_are_the_locked_ones() -> None:
    """Every locked package that is installed here has exactly the locked version."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked: dict[str, set[str]] = {}
    for package in lock["package"]:
        # A package may be locked at two versions for two Python ranges (numpy is).
        locked.setdefault(package["name"], set()).add(package["version"])
    checked = 0
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name in locked and name != "optionsfeed":
            assert dist.version in locked[name], f"{name} {dist.version} not in {locked[name]}"
            checked += 1
    # The test dependencies alone are more than 30 packages: an empty match means a broken check.
    assert checked > 30, f"only {checked} installed packages found in uv.lock ({sys.prefix})"
