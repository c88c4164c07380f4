"""The package ships without the benchmarks and never imports them; product tests neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from optionsfeed import cli

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    """The top-level names of the modules `path` imports absolutely (`benchmarks`, ...)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_neither_the_package_nor_product_tests_import_the_benchmarks() -> None:
    """Only tests/benchmarks/ import `benchmarks`; the package reaches them by name only,
    in `optionsfeed bench` (a lazy importlib call, not an import statement)."""
    product = [*(ROOT / "src" / "optionsfeed").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    offenders = [
        p.relative_to(ROOT)
        for p in product
        if "benchmarks" in _imports(p) and (ROOT / "tests" / "benchmarks") not in p.parents
    ]
    assert offenders == []


def test_the_fakes_import_neither_pytest_nor_the_benchmarks() -> None:
    """tests/fakes/ serve the benchmarks too, which run without pytest."""
    for p in (ROOT / "tests" / "fakes").rglob("*.py"):
        assert not _imports(p) & {"pytest", "benchmarks"}, p


def test_importing_the_package_imports_no_benchmark() -> None:
    """Every module of the package imports without `benchmarks` coming along."""
    code = (
        "import pkgutil, sys, importlib, optionsfeed\n"
        "for m in pkgutil.walk_packages(optionsfeed.__path__, 'optionsfeed.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'benchmarks'], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "tests", timeout=60)


def test_bench_without_the_benchmarks_says_how_to_get_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a source checkout (as from a wheel) `optionsfeed bench` exits 2 and says how."""
    assert cli._bench(["venues"], root=tmp_path) == 2
    err = capsys.readouterr().err
    assert "not installed with the package" in err
    assert "pip install -e '.[bench]'" in err
    assert "python -m benchmarks" in err


def test_bench_in_the_checkout_runs_the_benchmarks_command_line() -> None:
    """`optionsfeed bench --help` is the benchmarks' own help, whatever the working directory."""
    out = subprocess.run(
        [sys.executable, "-m", "optionsfeed.cli", "bench", "venues", "--help"],
        check=True, capture_output=True, text=True, cwd="/", timeout=60,
    ).stdout  # fmt: skip
    assert out.startswith("usage: optionsfeed bench")
    assert "--scenarios" in out
