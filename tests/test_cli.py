"""The command line: generated help, presets as tyro subcommands, and clear errors for bad
input (tyro's own for what it parses, one 'agdrl: …' line for what a config refuses)."""

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
        main(["avalanche", "demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--train-steps", "--diffusion.horizon", "--diffusion.denoiser.kind",
                   "--ensemble.members", "--samplers", "--max-horizon"):
        assert option in out
    assert "Gradient steps for each world model" in out  # the field's docstring
    assert "1500" in out  # the demo preset's value is the shown default


@pytest.mark.parametrize(("args", "message"), [
    (["avalanche", "--behavior", "random", "--train-steps", "0"], "train_steps must be positive"),
    (["avalanche", "--behavior", "random", "--env", "CartPole-v1"], "Discrete"),
    (["avalanche", "--behavior", "random", "--samplers", "euler:4"], "unknown sampler 'euler'"),
    (["nonsense"], "unknown command 'nonsense'"),
    (["eval", "somewhere", "--episodes", "0"], "episodes must be positive, got 0"),
    (["dream", "somewhere", "--starts", "0"], "starts must be positive, got 0"),
    (["train", "tiny", "--total-steps", "10"], "the agent would never train"),
])
def test_a_value_a_config_refuses_exits_with_one_line(args, message):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert message in str(exc.value.code) and str(exc.value.code).startswith("agdrl: ")


@pytest.mark.parametrize(("args", "message"), [
    (["avalanche", "nope"], "nope"),
    (["train", "fastest"], "fastest"),
    (["train", "--bogus", "1"], "--bogus"),
    (["train", "--total-steps", "many"], "many"),
    (["eval"], "missing from agdrl eval"),
    (["dream"], "missing from agdrl dream"),
    (["resume"], "missing from agdrl resume"),
    (["bench", "--spec"], "--spec"),
])
def test_what_tyro_cannot_parse_is_named_in_its_error(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message.lower() in err.lower() and "Traceback" not in err


def test_presets_are_subcommands_named_before_their_options(tmp_path, capsys):
    from agdrl.cli import TrainCommand, parse
    from agdrl.presets import PRESETS

    assert parse(TrainCommand, [], "agdrl train").config == PRESETS["fast"]
    after = parse(TrainCommand, ["paper", "--env", "Hopper-v5", "--run-dir", str(tmp_path)],
                  "agdrl train")
    before = parse(TrainCommand, ["--run-dir", str(tmp_path), "paper", "--env", "Hopper-v5"],
                   "agdrl train")
    assert after == before  # the command's own options go anywhere
    with pytest.raises(SystemExit):  # the default preset's option came first: it chose 'fast'
        parse(TrainCommand, ["--env", "Hopper-v5", "paper"], "agdrl train")
    assert "Move 'paper' earlier" in capsys.readouterr().err
    assert after.config.env == "Hopper-v5" and after.run_dir == tmp_path
    assert after.config.diffusion == PRESETS["paper"].diffusion


@pytest.mark.parametrize("command", ["train", "resume", "eval", "dream", "baseline", "bench",
                                     "report", "avalanche"])
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
