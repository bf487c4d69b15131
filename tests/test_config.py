"""Bad configuration values fail fast: a ConfigError naming the field when the config is
built (API), one ``agdrl: …`` line and a non-zero exit at the command line. Property-based
tests (hypothesis) over numeric values and over command lines."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agdrl import AGDMBRL, TrainConfig
from agdrl.cli import main
from agdrl.config import (
    ActorCriticConfig,
    ConfigError,
    DenoiserConfig,
    DiffusionConfig,
    EnsembleConfig,
    ImaginationConfig,
    ImaginationExperiments,
    config_from_dict,
)
from agdrl_lab.avalanche import AvalancheConfig

INVALID = [
    (DenoiserConfig, {"kind": "rnn"}, "unknown kind 'rnn'"),
    (DenoiserConfig, {"width": 0}, "width must be positive"),
    (DenoiserConfig, {"depth": -1}, "depth must be in [1, 256], got -1"),
    (DenoiserConfig, {"kind": "transformer", "width": 30, "heads": 4}, "divide by heads"),
    (DenoiserConfig, {"kind": "transformer", "width": 9, "heads": 3}, "even"),
    (DiffusionConfig, {"horizon": 1}, "horizon must be at least 2"),
    (DiffusionConfig, {"horizon": 0}, "horizon must be at least 2"),
    (DiffusionConfig, {"num_steps": 0}, "num_steps must be positive"),
    (DiffusionConfig, {"schedule": "sigmoid"}, "unknown schedule"),
    (DiffusionConfig, {"prediction": "v"}, "unknown prediction"),
    (DiffusionConfig, {"schedule_tau": 0.0}, "schedule_tau must be positive"),
    (DiffusionConfig, {"lr": -1e-3}, "lr must be positive"),
    (DiffusionConfig, {"ema_decay": 1.0}, "ema_decay must be in [0, 1)"),
    (DiffusionConfig, {"condition_dropout": 1.0}, "condition_dropout"),
    (DiffusionConfig, {"clip_value": 0.0}, "clip_value must be positive"),
    (DiffusionConfig, {"x0_bound": -1.0}, "x0_bound must be non-negative"),
    (EnsembleConfig, {"members": 2, "elites": 3}, "elites must be in [1, members=2]"),
    (ActorCriticConfig, {"gamma": 0.0}, "gamma must be in (0, 1]"),
    (ActorCriticConfig, {"lam": 1.5}, "lam must be in [0, 1]"),
    (ActorCriticConfig, {"min_std": 0.5, "init_std": 0.2}, "min_std < init_std"),
    (ActorCriticConfig, {"actor_lr": 0.0}, "actor_lr must be positive"),
    (ImaginationConfig, {"batch_size": 0}, "batch_size must be positive"),
    (ImaginationConfig, {"guidance": "magic"}, "unknown guidance 'magic'"),
    (ImaginationConfig, {"advantage": "mc"}, "unknown advantage 'mc'"),
    (ImaginationConfig, {"sampler": "euler"}, "unknown sampler 'euler'"),
    (ImaginationConfig, {"sampler_steps": -2}, "sampler_steps must be ≥ 0"),
    (ImaginationConfig, {"sampler_spacing": "leading"}, "unknown sampler_spacing 'leading'"),
    (ImaginationConfig, {"guidance_scale": -1.0}, "guidance_scale must be non-negative"),
    (ImaginationConfig, {"guidance_mode": "sigma2"}, "unknown guidance_mode"),
    (TrainConfig, {"total_steps": 0}, "total_steps must be positive"),
    (TrainConfig, {"prefill_steps": 30_000}, "the agent would never train"),
    (TrainConfig, {"eval_every": -1}, "eval_every must be non-negative"),
    (TrainConfig, {"keep_checkpoints": 0}, "keep_checkpoints must be positive"),
    (TrainConfig, {"imagination": ImaginationConfig(sampler_steps=500)},
     "exceeds the world model's diffusion steps"),
    (TrainConfig, {"imagination": ImaginationConfig(cuda_graph=True)},
     "needs world_model 'diffusion' and a 'cuda' device"),
    (AvalancheConfig, {"train_steps": 0}, "train_steps must be positive"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), INVALID,
                         ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in INVALID])
def test_invalid_values_raise_a_config_error_naming_the_problem(cls, kwargs, message):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert message in str(err.value)
    with pytest.raises(ConfigError):  # dataclasses.replace validates too
        dataclasses.replace(cls(), **kwargs)


def test_contradictory_options_for_the_agent():
    """Video and W&B need somewhere to write."""
    model = AGDMBRL("InvertedPendulum-v5", dataclasses.replace(TrainConfig(), video=True))
    with pytest.raises(ConfigError, match="run_dir"):  # before any step is taken
        model.learn(10)
    assert model.num_timesteps == 0


POSITIVE_INTS = {
    DiffusionConfig: ["num_steps", "batch_size"],
    ImaginationConfig: ["batch_size"],
    TrainConfig: ["agent_update_every", "eval_episodes", "keep_checkpoints"],
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(c, f) for c, fields in POSITIVE_INTS.items() for f in fields]),
       st.integers(-10**9, 10**9))
def test_count_fields_accept_exactly_the_positive_values(field, value):
    cls, name = field
    if value > 0:
        assert getattr(cls(**{name: value}), name) == value
    else:
        with pytest.raises(ConfigError, match=name):
            cls(**{name: value})


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True))
def test_discount_and_lambda_accept_exactly_their_ranges(gamma, lam):
    ok = 0 < gamma <= 1 and 0 <= lam <= 1  # False for NaN
    if ok:
        ActorCriticConfig(gamma=gamma, lam=lam)
    else:
        with pytest.raises(ConfigError):
            ActorCriticConfig(gamma=gamma, lam=lam)


@settings(max_examples=60, deadline=None)
@given(st.integers(-5, 40), st.integers(-3, 300), st.integers(-3, 300))
def test_horizon_and_step_counts(horizon, num_steps, sampler_steps):
    """The world model's horizon and step counts, and the imagination's sampler steps
    against them, are accepted exactly when they can work."""
    ok = horizon >= 2 and num_steps > 0 and 0 <= sampler_steps <= max(num_steps, 0)
    try:
        TrainConfig(diffusion=DiffusionConfig(horizon=horizon, num_steps=num_steps),
                    imagination=ImaginationConfig(sampler_steps=sampler_steps,
                                                  guide_last_state=True))
    except ConfigError:
        assert not ok
    else:
        assert ok


OPTIONS = ["--total-steps", "--prefill-steps", "--eval-episodes", "--diffusion.horizon",
           "--diffusion.num-steps", "--imagination.batch-size", "--agent.gamma", "--guidance",
           "--advantage", "--imagination.sampler", "--bogus-option", "--preset", "--env"]
VALUES = st.one_of(st.integers(-100, 0).map(str), st.sampled_from(
    ["abc", "", "-", "1e400", "nan", "magic", "CartPole-v1", "NoSuchEnv-v9", "fast2"]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(OPTIONS), VALUES), min_size=1, max_size=3))
def test_bad_command_lines_end_in_a_clear_error(pairs):
    """Any mix of bad values (out of range, wrong type, unknown choice, unknown option or env)
    ends with SystemExit before any training starts, with no traceback: one 'agdrl: …' line
    for what a config or the environment refuses, tyro's own error (exit code 2) for what
    cannot be parsed."""
    args = ["train", "--run-dir", "/nonexistent/never-created"]
    for option, value in pairs:
        args += [option, value]
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(err):
        main(args)
    if exc.value.code == 2:
        assert "Traceback" not in err.getvalue() and err.getvalue().strip()
    else:
        message = str(exc.value.code)
        assert message.startswith("agdrl: ") and "\n" not in message.strip()


def test_a_saved_config_keeps_the_meaning_it_had_when_written():
    """A config saved before a field existed is read back with what agdrl did then (its
    ``FORMER_DEFAULTS``), not the current default; a current config round-trips."""
    saved = dataclasses.asdict(TrainConfig())
    assert config_from_dict(TrainConfig, saved) == TrainConfig()
    for name in ("policy_guidance", "policy_relaxation", "settle_steps"):
        del saved["imagination"][name]
    old = config_from_dict(TrainConfig, saved).imagination
    assert (old.policy_guidance, old.policy_relaxation, old.settle_steps) == ("pull", 1.0, 0)
    assert (TrainConfig().imagination.policy_relaxation, TrainConfig().imagination.settle_steps,
            TrainConfig().imagination.policy_guidance) == (0.5, 4, "sample")


def test_a_saved_config_with_moved_or_removed_fields_is_read_or_refused_as_earlier():
    """Fields that moved into ``imagination.experimental`` are read from the top level, where
    older runs saved them; the removed joint layout's fields are dropped when they hold the
    value that means today's behaviour, and a run that used the joint layout is refused as
    being from an earlier agdrl."""
    saved = dataclasses.asdict(TrainConfig())
    moved = {k: v for k, v in saved["imagination"].pop("experimental").items()
             if k in ImaginationConfig.MOVED_FIELDS}  # older configs have no later fields
    saved["imagination"].update(moved, termination="classifier", guidance_max_step=3)
    saved["diffusion"].update(layout="polygrad", joint_action_pin_prob=0.5)
    old = config_from_dict(TrainConfig, saved)
    assert old.imagination.experimental == ImaginationExperiments(termination="classifier",
                                                                  guidance_max_step=3)
    assert old.diffusion == TrainConfig().diffusion
    saved["diffusion"]["layout"] = "joint"
    with pytest.raises(ConfigError, match=r"F: diffusion.layout = 'joint' is from an earlier "
                                          r"agdrl, which no longer has it \(only 'polygrad'"):
        config_from_dict(TrainConfig, saved, "F")


@pytest.mark.parametrize("guidance", ["sag", "eag", "reward"])
def test_state_guidance_on_two_state_segments_needs_the_last_state(guidance: str):
    two = DiffusionConfig(horizon=2)
    with pytest.raises(ConfigError, match="guides nothing"):
        TrainConfig(diffusion=two, imagination=ImaginationConfig(guidance=guidance))
    TrainConfig(diffusion=two, imagination=ImaginationConfig(guidance=guidance,
                                                             guide_last_state=True))
    TrainConfig(diffusion=two, imagination=ImaginationConfig(guidance="none"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["diffusion"].update(horizon="10"),
     "F: diffusion.horizon must be an integer, got a string '10'"),
    (lambda d: d["diffusion"].update(schedule_tau="x"),
     "F: diffusion.schedule_tau must be a number, got a string 'x'"),
    (lambda d: d["imagination"].update(guidance="magic"),
     "F: imagination.guidance must be one of 'none', 'sag', 'eag', 'reward', 'cfg'"),
    (lambda d: d["agent"].update(hidden=True), "F: agent.hidden must be an integer, got a "
                                               "boolean True"),
    (lambda d: d.update(video=1), "F: video must be a boolean (true or false), got an integer"),
    (lambda d: d["diffusion"].update(denoiser=[]), "F: diffusion.denoiser must be a JSON object"),
    (lambda d: d["diffusion"].update(widht=3), "F: unknown field(s) diffusion.widht"),
    (lambda d: d["agent"].update(gamma=float("inf")),
     "F: agent.gamma must be a finite number, got inf"),
    (lambda d: d.update(seed=2**40), "F: seed must be in [0, 2**32)"),
])
def test_a_saved_config_is_read_with_its_types_or_refused_naming_the_field(change, message):
    """A hand-edited config.json is never half-read: a value of the wrong type, an unknown
    field or a non-finite number is refused with the file and the field's dotted name; a
    number given as an integer and a null where None is allowed are read."""
    saved = dataclasses.asdict(TrainConfig())
    change(saved)
    with pytest.raises(ConfigError) as err:
        config_from_dict(TrainConfig, saved, "F")
    assert str(err.value).startswith(message), str(err.value)
    fine = dataclasses.asdict(TrainConfig())
    fine["diffusion"].update(lr=1, schedule_tau=None)
    assert config_from_dict(TrainConfig, fine, "F").diffusion.lr == 1.0


def test_a_non_finite_float_is_refused_in_any_config():
    with pytest.raises(ConfigError, match="guidance_scale must be a finite number, got inf"):
        ImaginationConfig(guidance_scale=float("inf"))
    with pytest.raises(ConfigError, match="lr must be a finite number, got nan"):
        EnsembleConfig(lr=float("nan"))
