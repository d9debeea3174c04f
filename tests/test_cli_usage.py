"""Command-line usage errors: click's usage line, one `error:` line, exit 2 (never "internal error")."""

from __future__ import annotations

import pytest

from tests.conftest import assert_usage_error, run_cli


@pytest.mark.parametrize(
    ("args", "usage", "fragments"),
    [
        (
            ["pretrian"],
            "Usage: lmtool [OPTIONS] COMMAND",
            ["No such command 'pretrian'", "Did you mean 'pretrain'"],
        ),
        (["pretrain"], "Usage: lmtool pretrain [OPTIONS]", ["Missing argument", "CONFIG"]),
        (
            ["pretrain", "--bogus", "x.yaml"],
            "Usage: lmtool pretrain [OPTIONS]",
            ["No such option", "--bogus"],
        ),
        (
            ["evaluate", "--stride", "abc"],
            "Usage: lmtool evaluate [OPTIONS]",
            ["Invalid value for '--stride'"],
        ),
        (["config", "shw"], "Usage: lmtool config [OPTIONS] COMMAND", ["No such command 'shw'"]),
    ],
    ids=["misspelled-command", "missing-argument", "unknown-option", "bad-int", "misspelled-subcommand"],
)
def test_usage_error_shows_usage_and_exits_2(args, usage, fragments):
    result = run_cli(*args)
    assert_usage_error(result, *fragments)
    assert usage in result.stderr and "-h' for help" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and not result.stdout


@pytest.mark.parametrize("args", [[], ["config"]], ids=["no-args", "config-no-subcommand"])
def test_no_command_prints_help_on_stderr_and_exits_2(args):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"Usage: lmtool {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "Commands:" in result.stderr and ("validate" if args else "pretrain") in result.stderr
    assert "\nerror:" not in result.stderr and not result.stdout


@pytest.mark.parametrize(
    "args", [["--help"], ["-h"], ["pretrain", "--help"], ["config", "-h"], ["--version"]]
)
def test_help_and_version_exit_0_on_stdout(args):
    result = run_cli(*args)
    assert result.returncode == 0 and result.stdout.startswith(("Usage: lmtool", "lmtool ")), result
    assert not result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["pretrain", "c.yaml", "--max-steps", "10"], "did you mean `--set train.max_steps=10`?"),
        (["finetune", "--output-dir=runs/x", "c.yaml"], "did you mean `--set run.output_dir=runs/x`?"),
        (["pretrain", "c.yaml", "--learning-rate", "1e-4"], "did you mean `--set train.lr=1e-4`?"),
        (["config", "validate", "c.yaml", "--quiet"], "put it before the command (`lmtool --quiet config"),
    ],
    ids=["trainer-flag", "flag-equals-value", "trainer-alias", "global-option-after-command"],
)
def test_unknown_option_hints_at_the_set_key_or_the_global_position(args, fragment):
    assert_usage_error(run_cli(*args), fragment)


def test_install_completion_installs_for_the_named_shell(tmp_path):
    """`--install-completion zsh` installed bash completion into ~/.bashrc (the shell name was ignored)."""
    result = run_cli("--install-completion", "zsh", env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".zfunc" / "_lmtool").is_file() and "compinit" in (tmp_path / ".zshrc").read_text()
    assert not (tmp_path / ".bashrc").exists()
    completed = run_cli(env={"_LMTOOL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "lmtool pre"})
    assert '"pretrain"' in completed.stdout, completed
