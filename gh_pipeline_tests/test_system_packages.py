"""The suite provides the system components it needs (chromium, a PostgreSQL server) or stops with
one line naming the command to run: gh_pipeline_tests/support/system_packages.py."""

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from gh_pipeline_tests.support.dagster_process import REPO_ROOT
from gh_pipeline_tests.support.system_packages import (
    CHROMIUM,
    POSTGRESQL,
    MissingSystemPackage,
    SystemPackage,
    ensure,
)


def _missing(package: str = "chromium") -> SystemPackage:
    return SystemPackage(package=package, find=lambda: None, what=f"the {package} test package")


def test_an_installed_component_is_used_as_found() -> None:
    # Both are installed on machines of this kind (.ci/run installs chromium on fresh ones).
    assert ensure(CHROMIUM) == Path("/usr/bin/chromium")
    bin_dir = ensure(POSTGRESQL)
    assert (bin_dir / "postgres").exists()
    assert (bin_dir / "initdb").exists()


def test_without_root_the_error_is_one_line_with_the_sudo_command() -> None:
    with pytest.raises(MissingSystemPackage) as err:
        ensure(_missing("chromium"), root=False, apt_get="/usr/bin/apt-get")
    message = str(err.value)
    assert "\n" not in message
    assert message.endswith("run: sudo apt-get update && sudo apt-get install -y chromium")


def test_as_root_without_apt_the_error_names_the_command_without_sudo() -> None:
    with pytest.raises(MissingSystemPackage) as err:
        ensure(_missing("postgresql"), root=True, apt_get="")
    assert str(err.value).endswith("run: apt-get update && apt-get install -y postgresql")


def test_as_root_with_apt_the_package_is_installed_then_found(tmp_path: Path) -> None:
    installed: list[Path] = []
    calls: list[list[str]] = []
    target = tmp_path / "chromium"

    def run(args: Sequence[str]) -> None:  # stands in for apt-get, which must not run here
        calls.append(list(args))
        if "install" in args:
            target.touch()
            installed.append(target)

    spec = SystemPackage(
        package="chromium", find=lambda: installed[0] if installed else None, what="chromium"
    )
    assert ensure(spec, root=True, apt_get="/usr/bin/apt-get", run=run) == target
    assert [c[:1] for c in calls] == [["/usr/bin/apt-get"], ["/usr/bin/apt-get"]]
    assert "update" in calls[0]
    assert calls[1][-1] == "chromium" and "install" in calls[1] and "-y" in calls[1]


def test_a_failed_install_is_one_line_with_apt_s_reason_and_the_command() -> None:
    def run(args: Sequence[str]) -> None:
        if "install" in args:
            raise subprocess.CalledProcessError(
                100, list(args), stderr=b"Reading package lists...\nE: Unable to locate package x\n"
            )

    with pytest.raises(MissingSystemPackage) as err:
        ensure(_missing("x"), root=True, apt_get="/usr/bin/apt-get", run=run)
    message = str(err.value)
    assert "\n" not in message
    assert "E: Unable to locate package x" in message
    assert message.endswith("run: apt-get update && apt-get install -y x")


def test_a_missing_component_errors_the_test_in_one_line_and_is_not_skipped(
    tmp_path: Path,
) -> None:
    """What a person sees from pytest: an ERROR with the command, not a skip."""
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        "from gh_pipeline_tests.support.system_packages import SystemPackage, require\n"
        "@pytest.fixture\n"
        "def browser():\n"
        "    spec = SystemPackage(package='chromium', find=lambda: None, what='chromium')\n"
        "    return require(spec, root=False)\n",
        encoding="utf-8",
    )
    (tmp_path / "test_needs_browser.py").write_text(
        "def test_uses_it(browser):\n    assert browser\n", encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    assert "1 error" in result.stdout and "skipped" not in result.stdout, result.stdout
    assert "another exception occurred" not in result.stdout, result.stdout
    lines = [line for line in result.stdout.splitlines() if "apt-get install" in line]
    assert (
        "chromium is not installed; run: sudo apt-get update && sudo apt-get install -y chromium"
        in lines[0]
    ), result.stdout
