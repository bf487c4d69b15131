"""Gymnasium environments: creation, space checks and exact simulator-state save/restore."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class UnsupportedSpaceError(ValueError):
    """Raised when an environment's observation or action space is not a flat ``Box``."""


def check_spaces(env: gym.Env) -> None:
    """Refuse anything but flat, bounded-action ``Box`` spaces, naming the offending space."""
    for role, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, spaces.Box):
            raise UnsupportedSpaceError(
                f"agdrl needs Box {role} spaces, but this environment's {role} space is "
                f"{type(space).__name__}: {space!r}"
            )
        if len(space.shape) != 1:
            raise UnsupportedSpaceError(
                f"agdrl needs a flat (1-D) Box {role} space, got shape {space.shape}: {space!r}"
            )
    low, high = env.action_space.low, env.action_space.high
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise UnsupportedSpaceError(
            f"agdrl needs a bounded action space, got {env.action_space!r}"
        )


class IncompatibleEnvError(ValueError):
    """An environment whose spaces differ from those an agent was trained on."""


def is_custom(env: gym.Env) -> bool:
    """Whether ``env`` is not one of Gymnasium's own environments (registered from another
    module, or made without ``gymnasium.make``)."""
    entry_point = getattr(getattr(env, "spec", None), "entry_point", None)
    return not (isinstance(entry_point, str) and entry_point.startswith("gymnasium."))


def check_custom_env(env: str | gym.Env) -> None:
    """Run Gymnasium's env checker on ``env`` (an id: on a new instance of it). Each of its
    complaints becomes a one-line warning; an API violation raises ValueError in its words."""
    from gymnasium.utils.env_checker import check_env

    instance = gym.make(env) if isinstance(env, str) else env
    name = env if isinstance(env, str) else env_id(env)
    with warnings.catch_warnings(record=True) as complaints:
        warnings.simplefilter("always")
        try:
            check_env(instance.unwrapped, skip_render_check=True)
        except Exception as err:  # the checker's own words, whatever it raises
            raise ValueError(f"{name} fails Gymnasium's env checker: {plain(str(err))} "
                             "(--no-check-env trains on it anyway)") from err
        finally:
            if isinstance(env, str):
                instance.close()
    for complaint in {plain(str(w.message)) for w in complaints}:
        warnings.warn(f"Gymnasium's env checker on {name}: {complaint}", stacklevel=2)


def plain(message: str) -> str:
    """A Gymnasium message without its colour codes and its 'WARN:' prefix."""
    return re.sub(r"\x1b\[[0-9;]*m", "", message).removeprefix("WARN: ").strip()


def make_env(env: str | gym.Env, seed: int | None = None, **kwargs) -> gym.Env:
    """Create (from an id) or accept an environment, check its spaces and seed it.

    Unknown ids raise ``gymnasium.error.Error`` subclasses with Gymnasium's own message.
    """
    created = gym.make(env, **kwargs) if isinstance(env, str) else env
    try:
        check_spaces(created)
    except UnsupportedSpaceError:
        if isinstance(env, str):  # we made it, so we close it
            created.close()
        raise
    if seed is not None:
        created.reset(seed=seed)
        created.action_space.seed(seed)
    return created


def eval_env_for(env: gym.Env, eval_env: gym.Env | None, render: bool) -> gym.Env:
    """The instance evaluation runs on: ``eval_env``, or a new one of ``env``'s registered
    spec (evaluation needs its own instance), rendering RGB frames when ``render``."""
    if eval_env is None:
        spec = getattr(env, "spec", None)
        if spec is None:
            raise ValueError("pass eval_env= for an environment that was not made by "
                             "gymnasium.make (evaluation needs its own instance)")
        if not render:  # no render_mode at all: not every env's constructor takes one
            return gym.make(spec)
        modes = env.metadata.get("render_modes") or []
        if "rgb_array" not in modes:
            raise ValueError(f"video needs an env that renders 'rgb_array' frames; {spec.id} "
                             f"offers render modes {modes}")
        return gym.make(spec, render_mode="rgb_array")
    if render and eval_env.render_mode != "rgb_array":
        raise ValueError("video needs an eval_env made with render_mode='rgb_array'")
    return eval_env


def recorded_id(given: str | gym.Env, made: gym.Env) -> str:
    """The id a run on ``made`` records: its registered id (an unversioned one resolved to the
    version Gymnasium made), after the module that registers it when ``given`` named one
    ('module:EnvId'), so that loading the run imports that module again."""
    module, _, _ = given.rpartition(":") if isinstance(given, str) else ("", "", "")
    return f"{module}:{env_id(made)}" if module else env_id(made)


def env_id(env: gym.Env) -> str:
    """The registered id of ``env``, or its class name when it was not made by ``gym.make``."""
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _mujoco_data(env: gym.Env) -> object | None:
    return getattr(env.unwrapped, "data", None)


def has_sim_state(env: gym.Env) -> bool:
    """True when the simulator state can be read and restored exactly (MuJoCo envs)."""
    data = _mujoco_data(env)
    return data is not None and hasattr(data, "qpos") and hasattr(env.unwrapped, "set_state")


def get_sim_state(env: gym.Env) -> np.ndarray | None:
    """The simulator state ``[qpos, qvel]`` (shape ``(nq + nv,)``), or None if not available."""
    if not has_sim_state(env):
        return None
    data = _mujoco_data(env)
    return np.concatenate([data.qpos, data.qvel]).astype(np.float64)


def set_sim_state(env: gym.Env, sim_state: np.ndarray) -> np.ndarray:
    """Restore ``[qpos, qvel]`` exactly and return the matching observation.

    The environment must have been reset before (so wrappers such as ``TimeLimit`` are armed).
    """
    if not has_sim_state(env):
        raise ValueError(f"environment {env_id(env)} does not expose a MuJoCo simulator state")
    unwrapped = env.unwrapped
    nq = unwrapped.model.nq
    nv = unwrapped.model.nv
    if sim_state.shape != (nq + nv,):
        raise ValueError(f"sim state has shape {sim_state.shape}, expected ({nq + nv},)")
    unwrapped.set_state(sim_state[:nq], sim_state[nq:])
    return np.asarray(unwrapped._get_obs(), dtype=np.float32)


def replay_actions(env: gym.Env, sim_state: np.ndarray, actions: np.ndarray,
                   on_state: Callable[[int], None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Restore ``sim_state`` and apply ``actions`` (T, da) in the simulator until they run out
    or the episode terminates; ``on_state(t)``, when given, is called at every state reached
    (t = 0 the restored one), while the simulator holds it (to render it, for example).

    Returns (states (T + 1, ds) with NaN after the last reached step, rewards (T,) with 0 after
    it, steps taken, whether the last step terminated). The env is reset first.
    """
    env.reset()
    obs = set_sim_state(env, sim_state)
    states = np.full((len(actions) + 1, obs.shape[0]), np.nan, np.float32)
    rewards = np.zeros(len(actions), np.float32)
    states[0] = obs
    if on_state is not None:
        on_state(0)
    terminated, steps = False, 0
    for t, action in enumerate(actions):
        obs, reward, terminated, _, _ = env.step(action)
        states[t + 1], rewards[t], steps = obs, reward, t + 1
        if on_state is not None:
            on_state(t + 1)
        if terminated:
            break
    return states, rewards, steps, bool(terminated)


def get_env_state(env: gym.Env) -> dict:
    """What continuing ``env`` exactly needs, as JSON-able data: the random streams of the env
    and of its action space, the time-limit step count, and (MuJoCo) the full integration
    state from ``mj_getState`` (time, qpos, qvel, actuator state, warm start, controls), so
    an episode in progress resumes bit for bit. Restore with :func:`set_env_state`."""
    state = {"np_random": env.unwrapped.np_random.bit_generator.state,
             "action_space": env.action_space.np_random.bit_generator.state,
             "elapsed_steps": _elapsed_steps(env)}
    if has_sim_state(env):
        import mujoco

        unwrapped = env.unwrapped
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        full = np.empty(mujoco.mj_stateSize(unwrapped.model, spec))
        mujoco.mj_getState(unwrapped.model, unwrapped.data, full, spec)
        state["mujoco"] = full.tolist()
    return state


def set_env_state(env: gym.Env, state: dict) -> None:
    """Restore what :func:`get_env_state` saved (resets the env first to arm its wrappers)."""
    env.reset()
    if "mujoco" in state:
        import mujoco

        unwrapped = env.unwrapped
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        full = np.asarray(state["mujoco"], dtype=np.float64)
        if full.shape != (mujoco.mj_stateSize(unwrapped.model, spec),):
            raise ValueError(f"saved simulator state has {full.size} numbers, "
                             f"{env_id(env)} needs {mujoco.mj_stateSize(unwrapped.model, spec)}")
        mujoco.mj_setState(unwrapped.model, unwrapped.data, full, spec)
    if state["elapsed_steps"] is not None:
        env.set_wrapper_attr("_elapsed_steps", state["elapsed_steps"])
    env.unwrapped.np_random.bit_generator.state = state["np_random"]
    env.action_space.np_random.bit_generator.state = state["action_space"]


def _elapsed_steps(env: gym.Env) -> int | None:
    try:
        return int(env.get_wrapper_attr("_elapsed_steps"))
    except AttributeError:
        return None
