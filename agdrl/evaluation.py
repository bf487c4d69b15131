"""The one evaluation protocol of every row: undiscounted returns of deterministic episodes,
optionally with a video of the first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np


def require_video() -> None:
    """Raise ImportError unless the 'video' extra is installed."""
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError as err:
        raise ImportError("video needs the 'video' extra: pip install 'agdrl[video]'") from err


def evaluate_policy(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int,
                    video_path: Path | None = None,
                    on_reset: Callable[[], None] | None = None) -> list[float]:
    """Undiscounted returns of ``episodes`` episodes of ``act`` on ``env`` (each starts with a
    reset that draws from the env's own seeded stream, then calls ``on_reset``); the first
    episode is written to ``video_path`` (MP4) when given. The one evaluation protocol of
    every row."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset()
        if on_reset is not None:
            on_reset()
        frames = [env.render()] if video_path is not None and episode == 0 else None
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
            if frames is not None:
                frames.append(env.render())
        returns.append(total)
        if frames:
            write_video(video_path, frames, env.metadata.get("render_fps", 30))
    return returns


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames, fps=fps, macro_block_size=1)


def encode_gif(frames: list[np.ndarray], fps: int) -> bytes:
    """An endlessly looping animated GIF of ``frames`` (Pillow alone: no video extra)."""
    import io

    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0)
    return out.getvalue()


def random_policy_return(task: str, episodes: int, seed: int) -> float:
    """Mean return of uniform random actions under the evaluation protocol."""
    from agdrl.envs import make_env

    env = make_env(task, seed=seed + 10_000)
    env.action_space.seed(seed)
    returns = evaluate_policy(env, lambda obs: env.action_space.sample(), episodes)
    env.close()
    return float(np.mean(returns))
