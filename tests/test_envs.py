"""Environment creation, space checks and exact MuJoCo state restore."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from agdrl.envs import (
    UnsupportedSpaceError,
    env_id,
    get_env_state,
    get_sim_state,
    has_sim_state,
    make_env,
    replay_actions,
    set_env_state,
    set_sim_state,
)


class TinyEnv(gym.Env):
    """A do-nothing environment whose spaces are chosen by the test."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)


def test_make_env_accepts_hopper() -> None:
    env = make_env("Hopper-v5", seed=0)
    assert isinstance(env.observation_space, spaces.Box)
    assert env.observation_space.shape == (11,)
    assert env.action_space.shape == (3,)
    assert env_id(env) == "Hopper-v5"
    assert has_sim_state(env)


def test_discrete_action_space_is_refused_by_name() -> None:
    with pytest.raises(UnsupportedSpaceError, match="Discrete"):
        make_env("CartPole-v1")


def test_unsupported_space_error_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it.
    assert issubclass(UnsupportedSpaceError, ValueError)


def test_dict_observation_space_is_refused_by_name() -> None:
    env = TinyEnv(spaces.Dict({"pos": BOX, "vel": BOX}), BOX)
    with pytest.raises(UnsupportedSpaceError, match="Dict"):
        make_env(env)


def test_image_shaped_box_is_refused() -> None:
    env = TinyEnv(spaces.Box(0, 255, (8, 8, 3), np.uint8), BOX)
    with pytest.raises(UnsupportedSpaceError, match="flat"):
        make_env(env)


def test_unbounded_action_space_is_refused() -> None:
    env = TinyEnv(BOX, spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(UnsupportedSpaceError, match="bounded"):
        make_env(env)


def test_flat_box_env_instance_is_accepted_as_is() -> None:
    env = TinyEnv(BOX, BOX)
    assert make_env(env) is env
    assert env_id(env) == "TinyEnv"


def test_unknown_id_raises_gymnasium_error() -> None:
    with pytest.raises(gym.error.Error):
        make_env("NoSuchEnvironment-v0")


def test_non_mujoco_env_has_no_sim_state() -> None:
    env = TinyEnv(BOX, BOX)
    assert not has_sim_state(env)
    assert get_sim_state(env) is None
    with pytest.raises(ValueError, match="simulator state"):
        set_sim_state(env, np.zeros(3))


def test_set_sim_state_rejects_wrong_shape() -> None:
    env = make_env("Hopper-v5", seed=0)
    env.reset(seed=0)
    state = get_sim_state(env)
    assert state is not None and state.shape == (6 + 6,)  # Hopper: nq = nv = 6
    with pytest.raises(ValueError, match="shape"):
        set_sim_state(env, state[:-1])


def test_restored_state_replays_the_recorded_trajectory() -> None:
    # No termination, so 30 random steps never run into a finished episode.
    kwargs = {"terminate_when_unhealthy": False}
    env = make_env("Hopper-v5", seed=0, **kwargs)
    obs, _ = env.reset(seed=0)
    actions = [env.action_space.sample() for _ in range(30)]
    recorded_obs, recorded_sim = [obs], [get_sim_state(env)]
    for a in actions:
        obs, *_ = env.step(a)
        recorded_obs.append(obs)
        recorded_sim.append(get_sim_state(env))

    other = make_env("Hopper-v5", **kwargs)
    other.reset(seed=123)  # a different start: everything must come from the restored state
    start = 10
    sim = recorded_sim[start]
    assert sim is not None
    restored = set_sim_state(other, sim)
    # set_sim_state returns float32 while Hopper-v5 observations are float64; the values are
    # the recorded observation rounded to float32, exactly.
    np.testing.assert_array_equal(restored, recorded_obs[start].astype(np.float32))
    for t in range(start, 30):
        obs, *_ = other.step(actions[t])
        # MuJoCo's solver warm start (qacc_warmstart) is not part of [qpos, qvel], so the
        # replay differs at round-off level (observed max 1.1e-15); 1e-9 leaves room for its
        # growth over 20 steps and is still far below any physical difference.
        np.testing.assert_allclose(obs, recorded_obs[t + 1], rtol=0, atol=1e-9)
        np.testing.assert_allclose(get_sim_state(other), recorded_sim[t + 1], rtol=0, atol=1e-9)


def test_time_limit_is_truncation_not_termination() -> None:
    env = make_env("InvertedPendulum-v5", max_episode_steps=5)
    env.reset(seed=0)
    flags = [env.step(np.zeros(1))[2:4] for _ in range(5)]
    # Holding still keeps the pole upright for 5 steps: only the time limit ends the episode.
    assert flags == [(False, False)] * 4 + [(False, True)]


def test_falling_pole_is_termination_not_truncation() -> None:
    env = make_env("InvertedPendulum-v5", max_episode_steps=1000)
    env.reset(seed=0)
    terminated = truncated = False
    for _ in range(1000):
        _, _, terminated, truncated, _ = env.step(np.full(1, 3.0))  # full push: it falls
        if terminated or truncated:
            break
    assert terminated and not truncated


def test_replay_actions_reproduces_an_episode_and_stops_at_its_end() -> None:
    """Replaying recorded actions from a stored state gives the recorded states and rewards;
    the replay stops at termination and pads the rest."""
    env = make_env("InvertedPendulum-v5", seed=3)
    env.reset(seed=3)
    sim, obs_seq, rewards = get_sim_state(env), [], []
    actions = np.full((60, 1), 3.0, np.float32)  # full push: the pole falls within 60 steps
    for a in actions:
        obs, r, terminated, _, _ = env.step(a)
        obs_seq.append(obs)
        rewards.append(r)
        if terminated:
            break
    n = len(obs_seq)
    assert terminated and n < 60
    states, replay_rewards, steps, ended = replay_actions(make_env("InvertedPendulum-v5"), sim,
                                                         actions)
    assert steps == n and ended
    np.testing.assert_allclose(states[1 : n + 1], np.array(obs_seq), atol=1e-6)
    np.testing.assert_allclose(replay_rewards[:n], rewards)
    assert np.isnan(states[n + 1 :]).all() and not replay_rewards[n:].any()


@pytest.mark.parametrize("task", ["Hopper-v5", "InvertedPendulum-v5"])
def test_env_state_continues_an_episode_bit_for_bit(task: str) -> None:
    """Saved mid-episode (JSON round trip), a fresh env instance continues exactly: the same
    observations, rewards, time-limit count and random streams (contacts included)."""
    import json

    env = make_env(task, seed=5)
    env.reset(seed=5)
    for _ in range(7):
        env.step(env.action_space.sample())
    saved = json.loads(json.dumps(get_env_state(env)))

    def rollout(e: gym.Env) -> list:
        out = []
        for _ in range(30):
            obs, r, term, trunc, _ = e.step(e.action_space.sample())
            out.append((obs.tolist(), r, term, trunc))
            if term or trunc:
                out.append(e.reset()[0].tolist())  # the reset draws from the env's stream
        return out

    expected = rollout(env)
    other = make_env(task, seed=123)
    set_env_state(other, saved)
    assert other.get_wrapper_attr("_elapsed_steps") == 7
    assert rollout(other) == expected


CUSTOM_MODULE = '''
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Line(gym.Env):
    """s' = s + 0.1 a, reward -|s|; its constructor takes no render_mode."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, noisy_reset=False, shifted=False):
        self.noisy_reset = noisy_reset
        if shifted:  # allowed, but not the symmetric box the checker recommends
            self.action_space = spaces.Box(0.0, 2.0, (1,), np.float32)

    def _obs(self):
        return self.s.astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        source = np.random if self.noisy_reset else self.np_random  # unseeded: a violation
        self.s = source.uniform(-1, 1, 2)
        return self._obs(), {}

    def step(self, action):
        self.s = self.s + 0.1 * float(action[0])
        return self._obs(), -float(np.abs(self.s).sum()), False, False, {}


gym.register("Line-v0", entry_point=Line, max_episode_steps=50)
gym.register("NoisyLine-v0", entry_point=Line, max_episode_steps=50,
             kwargs={"noisy_reset": True})
gym.register("ShiftedLine-v0", entry_point=Line, max_episode_steps=50,
             kwargs={"shifted": True})
'''

CUSTOM_ARGS = ["--total-steps", "200", "--prefill-steps", "120", "--pretrain-steps", "10",
               "--eval-every", "0", "--eval-episodes", "1", "--checkpoint-every", "100"]


@pytest.fixture
def line_module(tmp_path, monkeypatch):
    """A module 'linemod' that registers Line-v0 (and two faulty variants) on import,
    importable in this process and in the processes it starts."""
    import sys

    (tmp_path / "linemod.py").write_text(CUSTOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    yield
    sys.modules.pop("linemod", None)
    for name in ("Line-v0", "NoisyLine-v0", "ShiftedLine-v0"):
        gym.registry.pop(name, None)


def forget_line_module() -> None:
    """As in a new process: neither the module nor its ids are known."""
    import sys

    sys.modules.pop("linemod", None)
    for name in ("Line-v0", "NoisyLine-v0", "ShiftedLine-v0"):
        gym.registry.pop(name, None)


def test_a_custom_env_by_module_id_trains_evaluates_and_resumes(line_module, tmp_path, capsys):
    """'module:EnvId' is recorded with its module, so evaluating and resuming the run import
    it again; its constructor takes no render_mode."""
    import json

    from agdrl.cli import main

    run = tmp_path / "run"
    assert main(["train", "tiny", "--env", "linemod:Line-v0", "--run-dir", str(run),
                 *CUSTOM_ARGS]) == 0
    assert json.loads((run / "config.json").read_text())["env"] == "linemod:Line-v0"
    forget_line_module()
    assert main(["eval", str(run), "--episodes", "2"]) == 0
    assert "linemod:Line-v0: mean return" in capsys.readouterr().out
    forget_line_module()
    assert main(["resume", str(run), "--total-steps", "300"]) == 0
    assert "(300 env steps)" in capsys.readouterr().out


def test_gymnasiums_env_checker_speaks_plainly_about_custom_envs(line_module, tmp_path,
                                                                 capsys):
    from agdrl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "tiny", "--env", "linemod:NoisyLine-v0", "--run-dir",
              str(tmp_path / "noisy"), *CUSTOM_ARGS])
    message = str(exc.value.code)
    assert message.startswith("agdrl: linemod:NoisyLine-v0 fails Gymnasium's env checker: ")
    assert "non-deterministic" in message and message.endswith(
        "(--no-check-env trains on it anyway)")
    assert "\x1b[" not in message
    assert main(["train", "tiny", "--env", "linemod:NoisyLine-v0", "--no-check-env",
                 "--run-dir", str(tmp_path / "unchecked"), *CUSTOM_ARGS]) == 0
    capsys.readouterr()
    assert main(["train", "tiny", "--env", "linemod:ShiftedLine-v0", "--run-dir",
                 str(tmp_path / "shifted"), *CUSTOM_ARGS]) == 0
    complaints = [line for line in capsys.readouterr().err.splitlines()
                  if "env checker" in line]
    assert complaints and all(line.startswith("agdrl: warning: Gymnasium's env checker on "
                                              "linemod:ShiftedLine-v0: ") for line in complaints)
    assert any("symmetric and normalized" in line for line in complaints)
    assert not any("\x1b[" in line or "WARN:" in line for line in complaints)


def test_video_of_an_env_that_cannot_render_is_refused_before_training(line_module, tmp_path):
    from agdrl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "tiny", "--env", "linemod:Line-v0", "--video", "--run-dir",
              str(tmp_path / "run"), *CUSTOM_ARGS])
    assert str(exc.value.code) == ("agdrl: video needs an env that renders 'rgb_array' "
                                   "frames; Line-v0 offers render modes []")
