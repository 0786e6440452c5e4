"""The ``kubellm`` command line."""

from __future__ import annotations

import pytest

from kubellm.cli import main


def test_version_prints_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("kubellm 0.")


def test_run_on_a_missing_path_says_so_and_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-f", "no/such/folder/"]) == 2
    assert "no/such/folder: no such file or folder" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["deploy"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'deploy'" in capsys.readouterr().err
