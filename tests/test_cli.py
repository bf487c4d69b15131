"""The command line: generated help, presets, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agdrl.cli import main


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "avalanche" in out and "dream" in out


def test_avalanche_help_shows_every_option_with_doc_and_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["avalanche", "--preset", "demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--train-steps", "--diffusion.horizon", "--diffusion.denoiser.kind",
                   "--ensemble.members", "--samplers", "--max-horizon"):
        assert option in out
    assert "Gradient steps for each world model" in out  # the field's docstring
    assert "1500" in out  # the demo preset's value is the shown default


@pytest.mark.parametrize(("args", "message"), [
    (["avalanche", "--preset", "nope"], "unknown preset 'nope'"),
    (["avalanche", "--behavior", "random", "--train-steps", "0"], "train_steps must be positive"),
    (["avalanche", "--behavior", "random", "--env", "CartPole-v1"], "Discrete"),
    (["avalanche", "--behavior", "random", "--samplers", "euler:4"], "unknown sampler 'euler'"),
    (["nonsense"], "unknown command 'nonsense'"),
    (["eval", "somewhere", "--episodes", "0"], "episodes must be positive, got 0"),
    (["eval"], "Missing from agdrl eval: PATH"),
    (["dream"], "Missing from agdrl dream: PATH"),
    (["dream", "somewhere", "--starts", "0"], "starts must be positive, got 0"),
])
def test_bad_input_exits_with_a_clear_message(args, message):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert message in str(exc.value.code)


@pytest.mark.parametrize("command", ["train", "eval", "dream", "baseline", "bench", "report",
                                     "avalanche"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command: str, flag: str, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, flag])
    assert exc.value.code == 0
    assert f"usage: agdrl {command}" in capsys.readouterr().out


def test_bad_input_at_the_console_is_one_line_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "agdrl.cli", "avalanche", "--behavior",
                           "random", "--env", "NoSuchEnv-v0"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("agdrl: ")
