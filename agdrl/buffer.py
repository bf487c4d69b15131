"""Replay buffer of real episodes with segment sampling that never crosses an episode boundary.

Storage is flat per transition ``t``: ``obs[t] = s_t``, ``next_obs[t] = s_{t+1}``, ``actions[t]``,
``rewards[t]``, ``terminated[t]`` (``s_{t+1}`` is a true terminal state) and ``truncated[t]``
(the episode was cut after this step by a time limit: ``s_{t+1}`` is *not* terminal).
``episode_end[t]`` is the flat index of the last transition of ``t``'s episode so far, which is
what keeps a segment inside its episode. MuJoCo simulator states ``[qpos, qvel]`` of ``s_t``
are kept when the environment exposes them, so any start state can be restored exactly.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


@dataclass(frozen=True)
class SegmentBatch:
    """A batch of ``B`` segments of ``H`` steps (numpy, unnormalized).

    states: (B, H, ds); actions: (B, H, da); rewards: (B, H); terminals: (B, H) in {0, 1};
    mask: (B, H), 1 where the step (transition) is real, 0 where the segment ran past its
    episode's end and was padded (padded states repeat the episode's final observation, actions
    its last action, rewards are 0, the terminal flag stays 1 after a true terminal);
    sim_states: (B, nq + nv) of ``s_0`` or None. The first padded state is real all the same:
    see :attr:`state_mask`.
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    mask: np.ndarray
    sim_states: np.ndarray | None

    @property
    def state_mask(self) -> np.ndarray:
        """(B, H), 1 where the state is a real observation: s_0 and the state after every real
        transition, so also the one after the episode's last step (the fallen state after a
        terminal, the last observation before a time limit), which no later step holds."""
        return np.concatenate([np.ones_like(self.mask[:, :1]), self.mask[:, :-1]], 1)


@dataclass(frozen=True)
class TransitionBatch:
    """A batch of single transitions: states, actions, rewards (B,), next_states, terminals (B,)."""

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray
    terminals: np.ndarray


class ReplayBuffer:
    """Episodes of a Box-observation, Box-action environment, stored flat.

    The buffer grows until ``capacity`` transitions and then refuses more (no silent eviction).
    """

    _ARRAYS = ("obs", "next_obs", "actions", "rewards", "terminated", "truncated", "episode_end")

    def __init__(self, obs_dim: int, action_dim: int, capacity: int = 2_000_000,
                 sim_state_dim: int | None = None):
        if obs_dim <= 0 or action_dim <= 0:
            raise ValueError(
                f"obs_dim and action_dim must be positive, got {obs_dim}, {action_dim}")
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.capacity = capacity
        self.sim_state_dim = sim_state_dim
        self.size = 0
        self._episode_start = 0
        self._alloc(min(capacity, 4096))

    # ------------------------------------------------------------------ storage
    def _alloc(self, n: int) -> None:
        old = {k: getattr(self, k) for k in (*self._ARRAYS, "sim_states") if hasattr(self, k)}
        self.obs = np.zeros((n, self.obs_dim), np.float32)
        self.next_obs = np.zeros((n, self.obs_dim), np.float32)
        self.actions = np.zeros((n, self.action_dim), np.float32)
        self.rewards = np.zeros(n, np.float32)
        self.terminated = np.zeros(n, bool)
        self.truncated = np.zeros(n, bool)
        self.episode_end = np.zeros(n, np.int64)
        self.sim_states = (np.zeros((n, self.sim_state_dim), np.float64)
                           if self.sim_state_dim else None)
        for k, v in old.items():
            if v is not None:
                getattr(self, k)[: self.size] = v[: self.size]

    def _reserve(self, n: int) -> None:
        need = self.size + n
        if need > self.capacity:
            raise RuntimeError(f"replay buffer is full ({self.capacity} transitions)")
        if need > len(self.obs):
            self._alloc(min(self.capacity, max(need, 2 * len(self.obs))))

    def add(self, obs, action, reward: float, next_obs, terminated: bool, truncated: bool,
            sim_state: np.ndarray | None = None) -> None:
        """Append one transition; the episode ends when ``terminated`` or ``truncated``."""
        self._reserve(1)
        i = self.size
        self.obs[i] = obs
        self.next_obs[i] = next_obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminated[i] = terminated
        self.truncated[i] = truncated and not terminated
        if self.sim_states is not None:
            if sim_state is None:
                raise ValueError("this buffer stores simulator states: pass sim_state")
            self.sim_states[i] = sim_state
        self.size += 1
        self.episode_end[self._episode_start : self.size] = i
        if terminated or truncated:
            self._episode_start = self.size

    def cut_episode(self) -> None:
        """End the episode in progress at its last transition, as a time limit would (its next
        state is real, nothing follows it): for an environment reset mid-episode, so that the
        next episode's transitions are not joined to it."""
        if self._episode_start < self.size:
            self.truncated[self.size - 1] = True
            self._episode_start = self.size

    def add_episode(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                    terminated: bool, truncated: bool,
                    sim_states: np.ndarray | None = None) -> None:
        """Append a whole episode.

        obs: (T+1, ds); actions: (T, da); rewards: (T,); sim_states: (T, nq + nv) of s_0 … s_{T-1}.
        """
        if self._episode_start != self.size:
            raise RuntimeError("an episode is in progress; finish it before adding a whole one")
        n = len(actions)
        if n == 0:
            raise ValueError("an episode needs at least one transition")
        if obs.shape != (n + 1, self.obs_dim) or actions.shape != (n, self.action_dim):
            raise ValueError(f"episode shapes obs {obs.shape} actions {actions.shape} do not match "
                             f"({n + 1}, {self.obs_dim}) and ({n}, {self.action_dim})")
        self._reserve(n)
        s = slice(self.size, self.size + n)
        self.obs[s] = obs[:-1]
        self.next_obs[s] = obs[1:]
        self.actions[s] = actions
        self.rewards[s] = rewards
        self.terminated[s] = False
        self.truncated[s] = False
        self.terminated[s.stop - 1] = terminated
        self.truncated[s.stop - 1] = truncated and not terminated
        if self.sim_states is not None:
            if sim_states is None:
                raise ValueError("this buffer stores simulator states: pass sim_states")
            self.sim_states[s] = sim_states
        self.episode_end[s] = s.stop - 1
        self.size += n
        self._episode_start = self.size

    # ------------------------------------------------------------------ queries
    def episode_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` flat index ranges of the episodes (the last may be in progress)."""
        if self.size == 0:
            return []
        ends = np.flatnonzero(np.diff(self.episode_end[: self.size]) != 0)
        starts = np.concatenate([[0], ends + 1])
        stops = np.concatenate([ends + 1, [self.size]])
        return list(zip(starts.tolist(), stops.tolist(), strict=True))

    def valid_starts(self, horizon: int, pad: bool) -> np.ndarray:
        """Flat indices that may start a segment of ``horizon`` steps.

        With ``pad=False`` only segments lying entirely inside one episode are allowed.
        """
        idx = np.arange(self.size)
        if pad:
            return idx
        return idx[idx + horizon - 1 <= self.episode_end[: self.size]]

    def sample_segments(self, batch_size: int, horizon: int, rng: np.random.Generator,
                        pad: bool = True, starts: np.ndarray | None = None) -> SegmentBatch:
        """Sample ``batch_size`` segments of ``horizon`` steps (see :class:`SegmentBatch`)."""
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        if starts is None:
            candidates = self.valid_starts(horizon, pad)
            if len(candidates) == 0:
                raise ValueError(f"no segment of {horizon} steps fits in the buffer "
                                 f"({self.size} transitions)")
            starts = candidates[rng.integers(0, len(candidates), size=batch_size)]
        steps = starts[:, None] + np.arange(horizon)[None, :]
        end = self.episode_end[starts][:, None]
        mask = steps <= end
        idx = np.minimum(steps, end)
        states = np.where(mask[..., None], self.obs[idx], self.next_obs[idx])
        actions = self.actions[idx]  # padded steps repeat the last real action, a plausible one
        rewards = np.where(mask, self.rewards[idx], 0.0).astype(np.float32)
        terminals = self.terminated[idx].astype(np.float32)
        return SegmentBatch(
            states=states.astype(np.float32), actions=actions, rewards=rewards,
            terminals=terminals, mask=mask.astype(np.float32),
            sim_states=None if self.sim_states is None else self.sim_states[starts].copy(),
        )

    def sample_transitions(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        """Transitions drawn uniformly with replacement."""
        return self.transitions(rng.integers(0, self.size, size=batch_size))

    def transitions(self, idx: np.ndarray) -> TransitionBatch:
        """The transitions at flat indices ``idx``."""
        return TransitionBatch(self.obs[idx], self.actions[idx], self.rewards[idx],
                               self.next_obs[idx], self.terminated[idx].astype(np.float32))

    def __len__(self) -> int:
        return self.size

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` of plain arrays plus a JSON header (no pickle)."""
        meta = {"format_version": FORMAT_VERSION, "obs_dim": self.obs_dim,
                "action_dim": self.action_dim, "capacity": self.capacity,
                "sim_state_dim": self.sim_state_dim, "size": self.size,
                "episode_start": self._episode_start}
        arrays = {k: getattr(self, k)[: self.size] for k in self._ARRAYS}
        if self.sim_states is not None:
            arrays["sim_states"] = self.sim_states[: self.size]
        header = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        with open(path, "wb") as f:
            np.savez(f, header=header, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ReplayBuffer:
        """Load a buffer written by :meth:`save`; never unpickles."""
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            with data:
                meta = json.loads(bytes(data["header"]).decode())
                arrays = {k: data[k] for k in data.files if k != "header"}
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} is not a valid agdrl replay buffer: {err}") from err
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported buffer format {meta.get('format_version')}")
        expected = set(cls._ARRAYS) | ({"sim_states"} if meta.get("sim_state_dim") else set())
        if set(arrays) != expected:
            raise ValueError(f"{path}: arrays {sorted(arrays)} do not match the expected "
                             f"{sorted(expected)}")
        buf = cls(meta["obs_dim"], meta["action_dim"], meta["capacity"], meta["sim_state_dim"])
        buf._reserve(meta["size"])
        for k, v in arrays.items():
            getattr(buf, k)[: meta["size"]] = v
        buf.size = meta["size"]
        buf._episode_start = meta["episode_start"]
        return buf
