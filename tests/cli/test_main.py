"""``dse-tune``: the subcommand registry and the one error path (``error:`` line, exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from dse_tune.cli import main as cli_main
from dse_tune.cli.common import CommandError, fail
from dse_tune.cli.main import SUBCOMMANDS, build_parser, main
from dse_tune.data import DatasetError

REPO = Path(__file__).resolve().parents[2]


def _one_error_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_the_package_exports_main():
    assert cli_main is main


def test_registry_names_every_subcommand():
    assert list(SUBCOMMANDS) == ["pretrain", "score", "track", "sweep", "select", "rescore", "validate", "demo", "optuna-worker"]
    assert all(module == f"dse_tune.cli.{name.replace('-', '_')}" for name, (module, _) in SUBCOMMANDS.items())
    parser = build_parser(commands=[])  # loads no subcommand module
    assert parser.parse_args(["optuna-worker"]).command == "optuna-worker"


def test_score_with_a_missing_checkpoint_is_one_error_line(tmp_path, capsys):
    assert main(["score", "--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
    captured = capsys.readouterr()
    assert "missing.ckpt" in _one_error_line(captured.err) and captured.out == ""


def test_score_with_a_missing_folder_is_one_error_line(capsys):
    assert main(["score", "--data", "/nonexistent"]) == 2
    assert "/nonexistent" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv", [["--checkpoint", "missing.ckpt"], ["--data", "/nonexistent"]])
def test_end_to_end_the_command_prints_one_error_line(tmp_path, argv):
    environment = {k: v for k, v in os.environ.items() if k != "DSE_TUNE_DEBUG"}
    environment["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "dse_tune.cli", "score", *argv],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert argv[1] in _one_error_line(done.stderr)


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("DSE_TUNE_DEBUG", "1")
    with pytest.raises(CommandError, match="missing.ckpt"):
        main(["score", "--checkpoint", str(tmp_path / "missing.ckpt")])
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "dse_tune.cli", "score", "--data", "/nonexistent"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr
    assert "CommandError: --data /nonexistent: no such folder" in done.stderr


@pytest.fixture
def fake_command(monkeypatch):
    """A subcommand ``fake`` whose run raises ``fake_command.error`` (or returns 0)."""
    module = types.ModuleType("dse_tune.cli.fake")
    module.error = None

    def run(args):
        if module.error is not None:
            raise module.error
        return 0

    module.add_arguments = lambda parser: parser.add_argument("--value")
    module.run = run
    monkeypatch.setitem(sys.modules, "dse_tune.cli.fake", module)
    monkeypatch.setitem(SUBCOMMANDS, "fake", ("dse_tune.cli.fake", "a test command"))
    return module


@pytest.mark.parametrize(
    "error, expected",
    [
        (CommandError("--value 3: too big"), "error: --value 3: too big"),
        (FileNotFoundError(2, "No such file or directory", "data.yaml"), "error: [Errno 2] No such file or directory: 'data.yaml'"),
        (DatasetError("no images found in photos/"), "error: no images found in photos/"),
        (ValueError("line one\n  line two"), "error: line one line two"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(fake_command, capsys, error, expected):
    fake_command.error = error
    assert main(["fake"]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]


def test_fail_carries_its_exit_status(fake_command, capsys):
    def nothing_selected(args):
        fail("nothing to select", code=1)

    fake_command.run = nothing_selected
    assert main(["fake"]) == 1
    assert capsys.readouterr().err == "error: nothing to select\n"


def test_interrupt_is_exit_130_and_bugs_keep_their_traceback(fake_command, capsys):
    fake_command.error = KeyboardInterrupt()
    assert main(["fake"]) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted (dse-tune fake)"]
    fake_command.error = KeyError("a bug")
    with pytest.raises(KeyError, match="a bug"):
        main(["fake"])


def test_debug_lets_user_errors_through(fake_command, monkeypatch):
    monkeypatch.setenv("DSE_TUNE_DEBUG", "1")
    fake_command.error = DatasetError("no images")
    with pytest.raises(DatasetError, match="no images"):
        main(["fake"])


def test_usage_errors_and_missing_modules_keep_argparse_behaviour(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["no-such-command"])
    assert exited.value.code == 2 and "invalid choice" in capsys.readouterr().err
    monkeypatch.setitem(SUBCOMMANDS, "later", ("dse_tune.cli.not_written_yet", "not there"))
    with pytest.raises(SystemExit) as exited:
        main(["later"])
    assert exited.value.code == 2 and "'dse-tune later' is not available in this build" in capsys.readouterr().err
    assert main(["select", "/nonexistent"]) == 2  # the other commands still work


def test_help_imports_no_subcommand_module(tmp_path):
    script = (
        "import sys\n"
        "from dse_tune.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('dse_tune.cli.') or m == 'torch'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "COMMAND" in done.stdout
    assert done.stdout.splitlines()[-1] == "['dse_tune.cli.common', 'dse_tune.cli.main']"
