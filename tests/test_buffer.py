"""Replay buffer: segments never cross episodes, persistence without pickle, normalizers."""

from __future__ import annotations

import io
import itertools
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agdrl.buffer import ReplayBuffer
from agdrl.normalization import RunningNormalizer

# ---------------------------------------------------------------------- labelled episodes
# Every value is derived from (episode id, step index), so a sampled segment can be checked
# against what it must contain without trusting the buffer's own bookkeeping.


@dataclass(frozen=True)
class Episode:
    length: int
    ending: str  # "terminated", "truncated" or "open" (still in progress)


def obs_of(ep: int, t: int) -> np.ndarray:
    return np.array([ep, t], np.float32)


def reward_of(ep: int, t: int) -> float:
    return 1.0 + t + 100 * ep  # never 0, so a padded 0 reward is recognisable


def sim_of(ep: int, t: int) -> np.ndarray:
    return np.array([ep + 0.5, t + 0.25, -t], np.float64)


def fill(buf: ReplayBuffer, episodes: list[Episode], whole: bool) -> None:
    """Add the episodes one step at a time, or (closed ones) with add_episode when ``whole``."""
    for ep, e in enumerate(episodes):
        terminated, truncated = e.ending == "terminated", e.ending == "truncated"
        if whole and e.ending != "open":
            obs = np.stack([obs_of(ep, t) for t in range(e.length + 1)])
            sims = np.stack([sim_of(ep, t) for t in range(e.length)])
            buf.add_episode(obs, obs[:-1].copy(), np.array([reward_of(ep, t) for t in
                                                            range(e.length)]),
                            terminated, truncated, sims)
            continue
        for t in range(e.length):
            last = t == e.length - 1
            buf.add(obs_of(ep, t), obs_of(ep, t), reward_of(ep, t), obs_of(ep, t + 1),
                    terminated and last, truncated and last, sim_of(ep, t))


def expected_segment(e: Episode, ep: int, t0: int, horizon: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """states, actions, rewards, terminals, mask of the segment starting at step t0 of ep."""
    states, actions, rewards, terminals, mask = [], [], [], [], []
    for h in range(horizon):
        t = t0 + h
        real = t < e.length
        states.append(obs_of(ep, t if real else e.length))  # padding repeats final next_obs
        # padding repeats the last real action (a plausible conditioning input)
        actions.append(obs_of(ep, t if real else e.length - 1))
        rewards.append(reward_of(ep, t) if real else 0.0)
        # The terminal flag is set on a true terminal's last step and stays set in padding.
        ended = e.ending == "terminated" and t >= e.length - 1
        terminals.append(float(ended))
        mask.append(float(real))
    return (np.stack(states), np.stack(actions), np.array(rewards, np.float32),
            np.array(terminals, np.float32), np.array(mask, np.float32))


episodes_strategy = st.builds(
    lambda closed, last_open: [Episode(n, end) for n, end in closed]
    + ([Episode(last_open, "open")] if last_open else []),
    st.lists(st.tuples(st.integers(1, 30), st.sampled_from(["terminated", "truncated"])),
             min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(1, 30)),
)


@settings(max_examples=120, deadline=None)
@given(episodes=episodes_strategy, horizon=st.integers(1, 15), pad=st.booleans(),
       whole=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_segments_stay_inside_one_episode(episodes: list[Episode], horizon: int, pad: bool,
                                          whole: bool, seed: int) -> None:
    buf = ReplayBuffer(2, 2, capacity=1000, sim_state_dim=3)
    fill(buf, episodes, whole)
    where = [(ep, t) for ep, e in enumerate(episodes) for t in range(e.length)]

    # Valid starts: every step with padding; only segments that fit an episode without.
    fits = [i for i, (ep, t) in enumerate(where) if pad or t + horizon <= episodes[ep].length]
    np.testing.assert_array_equal(buf.valid_starts(horizon, pad), fits)
    rng = np.random.default_rng(seed)
    if not fits:
        with pytest.raises(ValueError, match="no segment"):
            buf.sample_segments(4, horizon, rng, pad=pad)
        return

    # Every valid start, then a random batch: both must match the labelled expectation.
    all_starts = buf.sample_segments(len(fits), horizon, rng, pad=pad, starts=np.array(fits))
    random_batch = buf.sample_segments(16, horizon, rng, pad=pad)
    for seg in (all_starts, random_batch):
        assert seg.sim_states is not None
        for i in range(len(seg.states)):
            ep, t0 = (int(v) for v in seg.states[i, 0])
            assert ep < len(episodes) and t0 < episodes[ep].length  # s_0 is a real step
            states, actions, rewards, terminals, mask = expected_segment(
                episodes[ep], ep, t0, horizon)
            np.testing.assert_array_equal(seg.states[i], states)
            np.testing.assert_array_equal(seg.actions[i], actions)
            np.testing.assert_array_equal(seg.rewards[i], rewards)
            np.testing.assert_array_equal(seg.terminals[i], terminals)
            np.testing.assert_array_equal(seg.mask[i], mask)
            # the states are real one step further: the one after the episode's last step too
            np.testing.assert_array_equal(
                seg.state_mask[i], [float(t0 + h <= episodes[ep].length) for h in range(horizon)])
            np.testing.assert_array_equal(seg.sim_states[i], sim_of(ep, t0))
        if not pad:
            assert np.all(seg.mask == 1)
        not_terminal = [i for i in range(len(seg.states))
                        if episodes[int(seg.states[i, 0, 0])].ending != "terminated"]
        assert np.all(seg.terminals[not_terminal] == 0)  # a time limit is not a terminal


def test_random_starts_cover_the_buffer() -> None:
    # Sampling must be able to reach every valid start, not a fixed subset.
    buf = ReplayBuffer(2, 2, capacity=100)
    fill(buf, [Episode(6, "terminated"), Episode(4, "truncated")], whole=False)
    seen = buf.sample_segments(2000, 3, np.random.default_rng(0), pad=False).states[:, 0]
    assert {tuple(s) for s in seen.tolist()} == {
        (0.0, t) for t in range(4)} | {(1.0, t) for t in range(2)}


def test_episode_bounds_follow_the_episodes() -> None:
    buf = ReplayBuffer(2, 2, capacity=100)
    fill(buf, [Episode(3, "terminated"), Episode(1, "truncated"), Episode(2, "open")], False)
    assert buf.episode_bounds() == [(0, 3), (3, 4), (4, 6)]


def test_sample_segments_rejects_non_positive_horizon() -> None:
    buf = ReplayBuffer(2, 2, capacity=100)
    fill(buf, [Episode(3, "terminated")], whole=False)
    with pytest.raises(ValueError, match="horizon"):
        buf.sample_segments(4, 0, np.random.default_rng(0))


# ---------------------------------------------------------------------- adding episodes
def test_add_episode_equals_adding_step_by_step() -> None:
    episodes = [Episode(5, "terminated"), Episode(3, "truncated"), Episode(1, "terminated")]
    by_step = ReplayBuffer(2, 2, capacity=100, sim_state_dim=3)
    whole = ReplayBuffer(2, 2, capacity=100, sim_state_dim=3)
    fill(by_step, episodes, whole=False)
    fill(whole, episodes, whole=True)
    assert by_step.size == whole.size == 9
    for name in (*ReplayBuffer._ARRAYS, "sim_states"):
        np.testing.assert_array_equal(getattr(whole, name)[:9], getattr(by_step, name)[:9],
                                      err_msg=name)
    assert whole.episode_bounds() == by_step.episode_bounds()


@pytest.mark.parametrize("whole", [False, True])
def test_terminated_and_truncated_together_count_as_terminated(whole: bool) -> None:
    buf = ReplayBuffer(1, 1, capacity=10)
    if whole:
        buf.add_episode(np.zeros((3, 1)), np.zeros((2, 1)), np.zeros(2), True, True)
    else:
        buf.add(0, 0, 0.0, 0, False, False)
        buf.add(0, 0, 0.0, 0, True, True)
    assert buf.terminated[:2].tolist() == [False, True]
    assert not buf.truncated[:2].any()


def test_add_episode_refuses_while_an_episode_is_open() -> None:
    buf = ReplayBuffer(1, 1, capacity=10)
    buf.add(0, 0, 0.0, 0, False, False)
    with pytest.raises(RuntimeError, match="in progress"):
        buf.add_episode(np.zeros((3, 1)), np.zeros((2, 1)), np.zeros(2), True, False)


def test_add_episode_checks_shapes_and_length() -> None:
    buf = ReplayBuffer(2, 1, capacity=10)
    with pytest.raises(ValueError):
        buf.add_episode(np.zeros((1, 2)), np.zeros((0, 1)), np.zeros(0), True, False)
    with pytest.raises(ValueError, match="shapes"):
        buf.add_episode(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3), True, False)
    assert buf.size == 0


def test_buffer_with_sim_states_requires_them() -> None:
    buf = ReplayBuffer(1, 1, capacity=10, sim_state_dim=2)
    with pytest.raises(ValueError, match="sim_state"):
        buf.add(0, 0, 0.0, 0, False, False)
    with pytest.raises(ValueError, match="sim_states"):
        buf.add_episode(np.zeros((3, 1)), np.zeros((2, 1)), np.zeros(2), True, False)


def test_capacity_is_enforced_without_partial_writes() -> None:
    buf = ReplayBuffer(1, 1, capacity=5)
    for t in range(5):
        buf.add(t, 0, 0.0, t + 1, False, t == 4)
    with pytest.raises(RuntimeError, match="full"):
        buf.add(5, 0, 0.0, 6, False, False)
    assert buf.size == 5

    buf = ReplayBuffer(1, 1, capacity=5)
    buf.add_episode(np.zeros((4, 1)), np.zeros((3, 1)), np.zeros(3), True, False)
    with pytest.raises(RuntimeError, match="full"):
        buf.add_episode(np.zeros((4, 1)), np.zeros((3, 1)), np.zeros(3), True, False)
    assert buf.size == 3


def test_growth_beyond_the_first_allocation_keeps_data() -> None:
    # Storage starts at 4096 rows and is reallocated as it grows; nothing may be lost.
    buf = ReplayBuffer(1, 1, capacity=10_000, sim_state_dim=1)
    values = np.arange(5001, dtype=np.float32)[:, None]
    buf.add_episode(values, values[:-1], values[:-1, 0], False, True, values[:-1])
    assert buf.size == 5000
    np.testing.assert_array_equal(buf.obs[:5000], values[:-1])
    np.testing.assert_array_equal(buf.next_obs[:5000], values[1:])
    assert buf.sim_states is not None
    np.testing.assert_array_equal(buf.sim_states[:5000], values[:-1])
    assert buf.episode_end[:5000].tolist() == [4999] * 5000


@pytest.mark.parametrize("kwargs", [{"obs_dim": 0, "action_dim": 1},
                                    {"obs_dim": 1, "action_dim": 0},
                                    {"obs_dim": 1, "action_dim": 1, "capacity": 0}])
def test_constructor_rejects_non_positive_sizes(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ReplayBuffer(**kwargs)


# ---------------------------------------------------------------------- persistence
def saved_buffer(tmp_path: Path) -> tuple[ReplayBuffer, Path]:
    buf = ReplayBuffer(2, 2, capacity=500, sim_state_dim=3)
    fill(buf, [Episode(7, "terminated"), Episode(5, "truncated"), Episode(4, "open")], False)
    path = tmp_path / "buffer.npz"
    buf.save(path)
    return buf, path


def test_save_load_round_trip(tmp_path: Path) -> None:
    buf, path = saved_buffer(tmp_path)
    loaded = ReplayBuffer.load(path)
    assert (loaded.obs_dim, loaded.action_dim, loaded.capacity, loaded.sim_state_dim,
            loaded.size) == (2, 2, 500, 3, buf.size)
    for name in (*ReplayBuffer._ARRAYS, "sim_states"):
        np.testing.assert_array_equal(getattr(loaded, name)[: buf.size],
                                      getattr(buf, name)[: buf.size], err_msg=name)
    a = buf.sample_segments(32, 4, np.random.default_rng(7))
    b = loaded.sample_segments(32, 4, np.random.default_rng(7))
    for name in ("states", "actions", "rewards", "terminals", "mask", "sim_states"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_loaded_buffer_continues_the_open_episode(tmp_path: Path) -> None:
    # The in-progress episode's start is persisted: finishing it after loading must give the
    # same episode boundaries as finishing it in the original buffer.
    buf, path = saved_buffer(tmp_path)
    loaded = ReplayBuffer.load(path)
    for b in (buf, loaded):
        b.add(obs_of(2, 4), obs_of(2, 4), 1.0, obs_of(2, 5), True, False, sim_of(2, 4))
    np.testing.assert_array_equal(loaded.episode_end[: loaded.size],
                                  buf.episode_end[: buf.size])
    assert loaded.episode_bounds() == [(0, 7), (7, 12), (12, 17)]


def _pickle_bytes() -> bytes:
    return pickle.dumps({"obs": np.zeros(3)})


def _object_npy_bytes() -> bytes:
    f = io.BytesIO()
    np.save(f, np.array([{"obs": 1}], dtype=object), allow_pickle=True)
    return f.getvalue()


def _plain_npy_bytes() -> bytes:
    f = io.BytesIO()
    np.save(f, np.zeros(3))
    return f.getvalue()


def _object_npz_bytes() -> bytes:
    f = io.BytesIO()
    np.savez(f, header=np.array([{"format_version": 1}], dtype=object))
    return f.getvalue()


def _wrong_version_bytes() -> bytes:
    f = io.BytesIO()
    np.savez(f, header=np.frombuffer(json.dumps({"format_version": 99}).encode(), np.uint8))
    return f.getvalue()


def _no_header_bytes() -> bytes:
    f = io.BytesIO()
    np.savez(f, obs=np.zeros((2, 2)))
    return f.getvalue()


@pytest.mark.parametrize("make_bytes", [
    pytest.param(_pickle_bytes, id="pickle"),
    pytest.param(_object_npy_bytes, id="object-npy"),
    pytest.param(_object_npz_bytes, id="object-npz"),
    pytest.param(_wrong_version_bytes, id="wrong-version"),
    pytest.param(_no_header_bytes, id="no-header"),
    pytest.param(lambda: b"not a buffer at all" * 4, id="garbage"),
    pytest.param(_plain_npy_bytes, id="plain-npy"),
    pytest.param(lambda: b"", id="empty"),
])
def test_load_refuses_foreign_files(tmp_path: Path, make_bytes) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(make_bytes())
    with pytest.raises(ValueError):
        ReplayBuffer.load(path)


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_load_refuses_truncated_file(tmp_path: Path, fraction: float) -> None:
    _, path = saved_buffer(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(ValueError):
        ReplayBuffer.load(path)


# ---------------------------------------------------------------------- normalizer
@settings(max_examples=80, deadline=None)
@given(data=hnp.arrays(np.float64, st.tuples(st.integers(1, 60), st.just(3)),
                       elements=st.floats(-1e3, 1e3)),
       cuts=st.lists(st.integers(0, 60), max_size=6))
def test_normalizer_matches_numpy_over_incremental_updates(data: np.ndarray,
                                                           cuts: list[int]) -> None:
    norm = RunningNormalizer(3)
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for lo, hi in itertools.pairwise(bounds):
        norm.update(data[lo:hi])  # empty splits must be no-ops
    assert norm.count.item() == len(data)
    # Chan's parallel update in float64 with values <= 1e3: errors are ~1e-16 relative to
    # the squared scale (1e6), so 1e-8 absolute is generous yet catches any formula error.
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-10, atol=1e-8)
    expected_std = np.maximum(np.sqrt(data.var(0)), norm.min_std)
    np.testing.assert_allclose(norm.std.numpy(), expected_std, rtol=1e-8, atol=1e-8)


def test_normalizer_accepts_torch_and_leading_dimensions() -> None:
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 5, 2))
    from_numpy, from_torch = RunningNormalizer(2), RunningNormalizer(2)
    from_numpy.update(data)
    from_torch.update(torch.tensor(data, dtype=torch.float32))
    np.testing.assert_allclose(from_numpy.mean.numpy(), data.reshape(-1, 2).mean(0), rtol=1e-12)
    # float32 input carries ~1e-7 relative precision.
    np.testing.assert_allclose(from_torch.mean.numpy(), from_numpy.mean.numpy(), rtol=1e-6)


def test_normalize_unnormalize_round_trip_and_gradient() -> None:
    rng = np.random.default_rng(1)
    norm = RunningNormalizer(4)
    norm.update(rng.normal([1.0, -5.0, 100.0, 0.0], [0.1, 2.0, 30.0, 1.0], size=(500, 4)))
    x = torch.tensor(rng.normal(size=(8, 4)) * 10, dtype=torch.float32, requires_grad=True)
    z = norm.normalize(x)
    assert z.dtype == torch.float32
    # float32 round trip: a few ulps of the largest magnitude involved (~1e3).
    torch.testing.assert_close(norm.unnormalize(z), x, atol=1e-4, rtol=1e-6)
    # normalize is differentiable (critics evaluate normalized predictions): d z / d x = 1 / std.
    z.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, (1 / norm.std.float()).expand_as(x))


def test_normalizer_state_dict_round_trip() -> None:
    a, b = RunningNormalizer(2), RunningNormalizer(2)
    a.update(np.random.default_rng(2).normal(size=(50, 2)))
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 2)
    assert torch.equal(a.normalize(x), b.normalize(x))


def test_private_statistics_are_read_within_the_block_and_shared_by_nothing() -> None:
    """Inside ``private_stats`` normalizing reads the yielded copy, which its owner (a CUDA
    graph's, agdrl.cuda_graph) may rewrite in place; outside it the shared cache is back, and
    an update never writes into tensors that a pending backward pass has saved."""
    rng = np.random.default_rng(3)
    norm = RunningNormalizer(2)
    norm.update(rng.normal(0.0, 1.0, size=(100, 2)))
    x = torch.randn(4, 2)
    shared = norm.stats(torch.float32)
    with norm.private_stats(torch.float32) as (mean, std):
        assert mean is not shared[0] and std is not shared[1]
        torch.testing.assert_close(norm.normalize(x), (x - shared[0]) / shared[1])
        mean.add_(1.0)
        torch.testing.assert_close(norm.normalize(x), (x - shared[0] - 1.0) / shared[1])
    assert norm.stats(torch.float32) is shared
    torch.testing.assert_close(norm.normalize(x), (x - shared[0]) / shared[1])
    y = torch.randn(4, 2, requires_grad=True)
    pending = norm.normalize(y)
    norm.update(rng.normal(5.0, 3.0, size=(50, 2)))
    norm.normalize(y)  # refreshes the cache
    pending.sum().backward()
    torch.testing.assert_close(y.grad, (1 / shared[1]).expand_as(y))


def test_normalizer_std_floor() -> None:
    norm = RunningNormalizer(1, min_std=1e-2)
    norm.update(np.full((10, 1), 3.0))
    # A constant feature has zero variance; the floor keeps normalization finite.
    assert norm.std.item() == pytest.approx(1e-2)
    assert torch.isfinite(norm.normalize(torch.tensor([[3.5]]))).all()


def test_load_refuses_missing_arrays(tmp_path: Path) -> None:
    """A file with the right header but an array missing must not load as zeros."""
    _, path = saved_buffer(tmp_path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "episode_end"}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="episode_end"):
        ReplayBuffer.load(path)


def test_normalizer_without_data_is_the_identity() -> None:
    """Forgetting to fit a normalizer must not scale inputs by 1 / min_std."""
    norm = RunningNormalizer(3)
    x = torch.randn(4, 3)
    torch.testing.assert_close(norm.normalize(x), x)


def test_cut_episode_ends_the_open_episode_as_a_time_limit() -> None:
    """An environment reset mid-episode (after a non-finite observation) must not join the
    next episode to the stored part of the last one."""
    buf = ReplayBuffer(1, 1, capacity=10)
    for t in range(3):
        buf.add([t], [0.0], 0.0, [t + 1], False, False)
    buf.cut_episode()
    buf.cut_episode()  # nothing open: no effect
    for t in range(2):
        buf.add([10 + t], [0.0], 0.0, [11 + t], False, False)
    assert buf.episode_bounds() == [(0, 3), (3, 5)]
    assert buf.truncated[:5].tolist() == [False, False, True, False, False]
    assert not buf.terminated[:5].any()
