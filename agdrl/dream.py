"""Dreams: what the world model imagines, next to what the simulator does with the same actions
from the same start state.

For start states drawn from a run's replay buffer, the world model imagines a trajectory as the
run does (or with another guidance, sampler or number of chained segments), and the simulator,
restored to each exact start state (the buffer keeps MuJoCo's ``[qpos, qvel]``), replays the
imagined actions. Each frame shows the imagined state on the left and the simulator's on the
right, with the step, the imagined and the real reward and the state error (mean over the
observation of the squared difference in units of the buffer's state standard deviation).

The imagined states are drawn by writing them into a second copy of the simulator
(:mod:`agdrl.poses`): every coordinate the observation holds is the world model's; what a task's
observation omits (Hopper's x, an Ant's x and y) is integrated from the imagined velocity,
starting from its exact value in the start state. The floor, the lighting and the tracking
camera are the simulator's own.

Written as an MP4, a GIF (for places that show no video), the numbers as JSON and a
self-contained HTML page.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_type_hints

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from agdrl.buffer import ReplayBuffer
from agdrl.config import (
    ConfigError,
    ImaginationConfig,
    SamplerKind,
    TimestepSpacing,
    require,
    require_positive,
)
from agdrl.envs import replay_actions
from agdrl.imagination import Imagination
from agdrl.pages import page, video_element
from agdrl.poses import PoseDecoder, draw
from agdrl.reward_model import fit_reward_model

if TYPE_CHECKING:
    from agdrl.trainer import AGDMBRL

_IMAGINATION_TYPES = get_type_hints(ImaginationConfig)
Guidance = _IMAGINATION_TYPES["guidance"]
"""The guidance names :class:`ImaginationConfig` takes."""
GuidanceMode = _IMAGINATION_TYPES["guidance_mode"]
"""The guidance modes :class:`ImaginationConfig` takes."""

Format = Literal["mp4", "gif", "html"]

KIND = "agdrl-dream"
"""The ``kind`` of a dream's JSON file (how ``agdrl report`` finds dreams)."""


@dataclass(frozen=True)
class DreamConfig:
    """What to imagine and how to draw it. None: as the run imagines."""

    starts: int = 4
    """Start states drawn from the replay buffer: one clip each, shown one after another."""
    segments: int | None = None
    """Chained diffusion segments per imagined trajectory, each after the first starting from
    the previous one's last imagined state (segments · (H − 1) + 1 states)."""
    guidance: Guidance | None = None
    """Guidance on top of policy guidance: none (PolyGRAD), sag, eag, reward (on a run without
    a reward model, one is first fitted to the replay buffer) or cfg (needs a run trained
    with it)."""
    guidance_scale: float | None = None
    """Scale of the state guidance."""
    guidance_mode: GuidanceMode | None = None
    """How the state guidance acts (as 'agdrl train --imagination.guidance-mode')."""
    sampler: SamplerKind | None = None
    """Reverse-process sampler."""
    sampler_steps: int | None = None
    """Denoising steps (0: all the training steps)."""
    sampler_spacing: TimestepSpacing | None = None
    """Which training indices a few-step sampler visits."""
    size: int = 320
    """Height and width in pixels of each of the two pictures."""
    fps: int = 10
    """Imagined steps per second of video."""
    formats: tuple[Format, ...] = ("mp4", "gif", "html")
    """What to write besides the numbers (JSON): the video (MP4), an animated GIF of it, a
    self-contained HTML page with the video and the numbers (needs the MP4)."""
    seed: int = 0
    """Seed of the start states and of the imagination's noise."""
    reward_model_steps: int = 2_000
    """Training steps of the reward model fitted for 'reward' guidance when the run has none."""

    def __post_init__(self):
        require_positive(self, "starts", "size", "fps", "reward_model_steps")
        require(self.size % 2 == 0, f"size must be even (the video's chroma is subsampled), "
                                    f"got {self.size}")
        require(self.segments is None or self.segments > 0,
                f"segments must be positive, got {self.segments}")
        require(self.sampler_steps is None or self.sampler_steps >= 0,
                f"sampler_steps must be ≥ 0 (0: all), got {self.sampler_steps}")
        require("html" not in self.formats or "mp4" in self.formats,
                "the HTML page shows the MP4: formats with 'html' need 'mp4'")


OVERRIDES = ("segments", "guidance", "guidance_scale", "guidance_mode", "sampler",
             "sampler_steps", "sampler_spacing")
"""The :class:`DreamConfig` fields that change the run's :class:`ImaginationConfig`."""


def imagination_config(base: ImaginationConfig, cfg: DreamConfig, batch: int
                       ) -> ImaginationConfig:
    """The run's imagination settings with the dream's changes, for ``batch`` starts (and no
    CUDA graph: a dream is one small batch)."""
    changes = {name: getattr(cfg, name) for name in OVERRIDES if getattr(cfg, name) is not None}
    return dataclasses.replace(base, batch_size=batch, cuda_graph=False, **changes)


@dataclass
class Clip:
    """One imagined trajectory of L states and the simulator's replay of its actions."""

    buffer_index: int
    """Where its start state lies in the replay buffer."""
    imagined_states: np.ndarray
    """(L, ds)."""
    imagined_rewards: np.ndarray
    """(L − 1,) rewards of the imagined transitions."""
    imagined_terminals: np.ndarray
    """(L,) the world model's terminal flags (threshold 0.5)."""
    real_states: np.ndarray
    """(L, ds), NaN after the replay ended."""
    real_rewards: np.ndarray
    """(L − 1,), 0 after the replay ended."""
    real_steps: int
    """Transitions the simulator replayed (fewer than L − 1 when the episode terminated)."""
    real_terminated: bool
    """Whether the replay ended in a terminal state."""
    errors: np.ndarray
    """(L,) state error at each step, NaN after the replay ended."""

    def summary(self) -> dict:
        """The clip's numbers, JSON-able."""
        ended = np.flatnonzero(self.imagined_terminals > 0.5)
        return {"buffer_index": self.buffer_index, "steps": len(self.imagined_states) - 1,
                "real_steps": self.real_steps, "real_terminated": self.real_terminated,
                "imagined_terminal_step": int(ended[0]) if len(ended) else None,
                "imagined_return": float(self.imagined_rewards[: self.real_steps].sum()),
                "real_return": float(self.real_rewards.sum()),
                "mean_state_error": float(np.nanmean(self.errors[1:]))
                if self.real_steps else math.nan,
                "state_errors": [None if math.isnan(e) else float(e) for e in self.errors],
                "imagined_rewards": self.imagined_rewards.tolist(),
                "real_rewards": self.real_rewards[: self.real_steps].tolist()}


@dataclass
class Dream:
    """Clips of one world model at one training step, and their side-by-side frames."""

    task: str
    env_step: int
    imagination: ImaginationConfig
    """The settings the clips were imagined with."""
    world_model: str
    clips: list[Clip]
    frames: list[np.ndarray]
    """(height, width, 3) uint8 each."""
    fps: int
    render_seconds: float
    """Wall-clock seconds spent drawing the frames (both pictures and the captions)."""

    def describe(self) -> str:
        """One line: what was imagined, and how."""
        icfg = self.imagination
        if self.world_model != "diffusion":
            return f"{self.task} at env step {self.env_step}, {self.world_model} world model"
        guidance = icfg.guidance
        if guidance not in ("none", "cfg"):
            guidance += f" ({icfg.guidance_mode}, scale {icfg.guidance_scale:g})"
        return (f"{self.task} at env step {self.env_step}: guidance {guidance}, sampler "
                f"{icfg.sampler} ({icfg.sampler_steps or 'all'} steps, "
                f"{icfg.sampler_spacing}), {icfg.segments} chained "
                f"segment{'s' if icfg.segments > 1 else ''}")

    def name(self) -> str:
        """A file name: the env step, and how the dream was imagined."""
        icfg = self.imagination
        how = (f"{icfg.guidance}-{icfg.sampler}{icfg.sampler_steps or ''}"
               if self.world_model == "diffusion" else self.world_model)
        return f"step_{self.env_step:09d}-{how}"

    def summary(self) -> dict:
        """The dream's numbers and settings, JSON-able."""
        return {"kind": KIND, "task": self.task, "env_step": self.env_step,
                "world_model": self.world_model, "description": self.describe(),
                "imagination": dataclasses.asdict(self.imagination), "fps": self.fps,
                "frames": len(self.frames), "render_seconds": round(self.render_seconds, 2),
                "clips": [c.summary() for c in self.clips]}

    def write(self, stem: Path, formats: tuple[Format, ...] = ("mp4", "gif", "html"),
              extra: dict | None = None) -> dict[str, Path]:
        """Write ``stem`` + ``.json`` (the numbers, with ``extra`` entries) and each format;
        returns the paths by format ('json' included)."""
        from agdrl.evaluation import encode_gif, write_video

        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = {"json": stem.with_suffix(".json")}
        paths["json"].write_text(json.dumps({**self.summary(), **(extra or {})}, indent=1))
        if "mp4" in formats:
            paths["mp4"] = stem.with_suffix(".mp4")
            write_video(paths["mp4"], self.frames, self.fps)
        if "gif" in formats:
            paths["gif"] = stem.with_suffix(".gif")
            paths["gif"].write_bytes(encode_gif(self.frames, self.fps))
        if "html" in formats:
            paths["html"] = stem.with_suffix(".html")
            paths["html"].write_text(self.page(paths["mp4"]))
        return paths

    def page(self, mp4: Path) -> str:
        """A self-contained HTML page: the video, a plot of the state error against the step
        (inline SVG), and a table of the clips."""
        rows = "".join(
            f"<tr><td>{i + 1}</td><td>{s['buffer_index']}</td><td>{s['steps']}</td>"
            f"<td>{s['real_steps']}{' (terminated)' if s['real_terminated'] else ''}</td>"
            f"<td>{'—' if s['imagined_terminal_step'] is None else s['imagined_terminal_step']}"
            f"</td><td>{s['imagined_return']:.2f}</td><td>{s['real_return']:.2f}</td>"
            f"<td>{s['mean_state_error']:.4f}</td></tr>"
            for i, s in enumerate(c.summary() for c in self.clips))
        body = (f"<h1>Dream: {html.escape(self.task)} at env step {self.env_step}</h1>\n"
                f"<p>{html.escape(self.describe())}.</p>\n"
                "<p>Left: what the world model imagines from a real start state of the replay "
                "buffer. Right: the simulator, restored to the same start state, replaying the "
                "imagined actions. Every drawn coordinate on the left is imagined, except those "
                "the observation omits (the body's position in the world on locomotion tasks), "
                "which are integrated from the imagined velocity. State error: mean squared "
                "difference of the observations in units of the buffer's state standard "
                "deviation.</p>\n"
                f"{video_element(mp4, self.describe())}\n"
                f"<figure>{self.error_plot()}<figcaption>State error at each step of each "
                "clip (until the replay ended).</figcaption></figure>\n"
                "<table><thead><tr><th>clip</th><th>buffer index</th><th>imagined steps</th>"
                "<th>replayed steps</th><th>imagined terminal at</th><th>imagined return"
                "</th><th>real return</th><th>mean state error</th></tr></thead>\n"
                f"<tbody>{rows}</tbody></table>")
        return page(f"Dream: {self.task} at env step {self.env_step}", body)

    def error_plot(self) -> str:
        """The state error against the step, one line per clip, as inline SVG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        for i, clip in enumerate(self.clips):
            ax.plot(np.arange(len(clip.errors)), clip.errors, label=f"clip {i + 1}")
        ax.set(xlabel="imagined step", ylabel="state error")
        ax.legend(fontsize=8)
        fig.tight_layout()
        svg = io.StringIO()
        # no metadata block: it only adds a date and namespace links
        fig.savefig(svg, format="svg", metadata=dict.fromkeys(("Date", "Creator", "Format",
                                                                 "Type")))
        plt.close(fig)
        text = svg.getvalue()
        return text[text.index("<svg"):]  # without the XML prologue


def dream(model: AGDMBRL, buffer: ReplayBuffer, cfg: DreamConfig | None = None,
          progress: bool = False) -> Dream:
    """Imagine from ``cfg.starts`` start states of ``buffer`` with ``model``'s world model,
    replay the imagined actions in the simulator and draw both side by side. Uses its own
    random streams and environments: the model's training state is left as it was."""
    cfg = cfg or DreamConfig()
    if buffer.sim_states is None:
        raise ValueError("dreams need the simulator states of the start states: this replay "
                         "buffer has none (a MuJoCo task's buffer keeps them)")
    if buffer.size == 0:
        raise ValueError("the replay buffer is empty")
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering
    rng = np.random.default_rng(cfg.seed)
    index = np.sort(rng.choice(buffer.size, min(cfg.starts, buffer.size), replace=False))
    imagination, icfg = _imagination(model, buffer, cfg, len(index), rng)
    generator = torch.Generator().manual_seed(cfg.seed)
    seg, _ = imagination(torch.as_tensor(buffer.obs[index]), generator)
    states = seg.states.detach().cpu().numpy().astype(np.float64)
    actions = seg.actions.detach().cpu().numpy()
    rewards = seg.rewards.detach().cpu().numpy()
    terminals = seg.terminals.detach().cpu().numpy()
    spec = model.env.spec
    if spec is None:
        raise ValueError("dreams draw with a fresh copy of the task: the agent's env must "
                         "have been made by gymnasium.make")
    real_env, canvas = (gym.make(spec, render_mode="rgb_array", width=cfg.size,
                                 height=cfg.size) for _ in range(2))
    try:
        real_env.reset(seed=cfg.seed)
        canvas.reset(seed=cfg.seed)
        _check_rendering(real_env)
        decoder = PoseDecoder(real_env)
        nq = real_env.unwrapped.model.nq
        scale = buffer.obs[: buffer.size].std(0) + 1e-6
        clips, frames, seconds = [], [], 0.0
        bar = tqdm(total=len(index) * states.shape[1], unit="frame", desc="dream",
                   disable=not progress)
        for j, i in enumerate(index):
            start = time.perf_counter()
            real_frames: list[np.ndarray] = []
            real, real_rewards, steps, ended = replay_actions(
                real_env, buffer.sim_states[i], actions[j, :-1],
                on_state=lambda t, frames=real_frames: frames.append(real_env.render()))
            errors = (((states[j] - real) / scale) ** 2).mean(1)
            clip = Clip(int(i), states[j], rewards[j, :-1], terminals[j], real, real_rewards,
                        steps, ended, errors)
            clips.append(clip)
            poses = decoder(states[j], buffer.sim_states[i][:nq])
            for t, qpos in enumerate(poses):
                frames.append(_frame(draw(canvas, qpos), real_frames[min(t, steps)], clip, t,
                                     (j, len(index)), icfg, spec.id))
                bar.update()
            seconds += time.perf_counter() - start
        bar.close()
    finally:
        real_env.close()
        canvas.close()
    return Dream(spec.id, model.num_timesteps, icfg, model.cfg.world_model, clips, frames,
                 cfg.fps, seconds)


def _check_rendering(env: gym.Env) -> None:
    """Render one frame, or say how to get headless rendering (the GL backends fail in many
    ways: unknown backend, missing library, no display)."""
    try:
        env.render()
    except Exception as err:
        raise ImportError(
            f"headless rendering with MUJOCO_GL={os.environ.get('MUJOCO_GL')} failed "
            f"({type(err).__name__}: {err}); start with MUJOCO_GL=egl, or MUJOCO_GL=osmesa "
            "(Debian: apt-get install libosmesa6)") from err


def _imagination(model: AGDMBRL, buffer: ReplayBuffer, cfg: DreamConfig, batch: int,
                 rng: np.random.Generator):
    """A fresh imagination of the run's world model with the dream's settings (so that
    dreaming does not move the run's own, such as the step δ that 'pull' policy guidance
    tunes as it imagines), and those settings."""
    world = model.world_model
    if model.cfg.world_model != "diffusion":
        asked = [name for name in OVERRIDES if getattr(cfg, name) is not None]
        if asked:
            raise ConfigError(f"{', '.join(asked)} set how the diffusion world model "
                              f"imagines; this run's is the {model.cfg.world_model!r} one")
        # the ensemble's rollouts are one piece of ensemble_horizon steps, never chained
        return world.imagination, dataclasses.replace(model.cfg.imagination, segments=1)
    icfg = imagination_config(model.cfg.imagination, cfg, batch)
    network = world.network
    require(icfg.sampler_steps <= network.cfg.num_steps,
            f"sampler_steps {icfg.sampler_steps} exceeds the world model's "
            f"{network.cfg.num_steps} diffusion steps")
    reward_model = None
    if icfg.guidance == "reward" or icfg.experimental.reward == "regressor":
        reward_model = world.reward_model
        if reward_model is None:
            reward_model, _ = fit_reward_model(buffer, cfg.reward_model_steps, rng)
    imagination = Imagination(network, model.agent, icfg, reward_model,
                              world.termination_model)
    imagination.policy.log_delta = world.imagination.policy.log_delta
    return imagination, icfg


def caption_height(size: int) -> int:
    """Pixels above pictures of ``size`` pixels for the captions (a title line and three lines
    per picture; 80 at the default 320, in proportion otherwise, even for the video)."""
    return 2 * round(40 * size / 320)


def _frame(imagined: np.ndarray, real: np.ndarray, clip: Clip, t: int,
           clip_number: tuple[int, int], icfg: ImaginationConfig, task: str) -> np.ndarray:
    """One video frame: captions above the imagined picture (left) and the simulator's
    (right, dimmed once its episode has ended)."""
    from PIL import Image, ImageDraw, ImageFont

    size = imagined.shape[0]
    top, scale = caption_height(size), size / 320
    ended = t > clip.real_steps
    if ended:
        real = (real * 0.45 + 140 * 0.55).astype(np.uint8)
    canvas = Image.new("RGB", (2 * size, size + top), "white")
    canvas.paste(Image.fromarray(imagined), (0, top))
    canvas.paste(Image.fromarray(real), (size, top))
    pen = ImageDraw.Draw(canvas)
    pen.line([(size, top), (size, size + top)], fill="white", width=2)
    font = ImageFont.load_default(size=max(1, round(13 * scale)))
    bold = ImageFont.load_default(size=max(1, round(14 * scale)))
    j, n = clip_number
    h = len(clip.imagined_states) - 1
    title = f"{task} · clip {j + 1}/{n} · buffer index {clip.buffer_index} · step {t}/{h}"
    if icfg.segments > 1:  # each chained segment adds h / segments steps
        title += f" · segment {min(t * icfg.segments // h, icfg.segments - 1) + 1}/" \
                 f"{icfg.segments}"
    pen.text((round(6 * scale), round(3 * scale)), title, fill="black", font=bold)

    def reward(rewards: np.ndarray) -> str:
        return "reward —" if t == 0 else (f"reward {rewards[t - 1]:+.3f}   return "
                                          f"{rewards[:t].sum():+.2f}")

    terminal = clip.imagined_terminals[t] > 0.5
    left = ["IMAGINED (world model)", reward(clip.imagined_rewards),
            "terminal state" if terminal else ""]
    if ended:
        right = ["REAL (simulator, same actions)",
                 f"episode {'terminated' if clip.real_terminated else 'ended'} at step "
                 f"{clip.real_steps}", ""]
    else:
        right = ["REAL (simulator, same actions)", reward(clip.real_rewards),
                 f"state error {clip.errors[t]:.4f}"]
    for x, lines in ((0, left), (size, right)):
        for k, line in enumerate(lines):
            pen.text((x + round(6 * scale), round((24 + 18 * k) * scale)), line, font=font,
                     fill=("firebrick" if line.startswith(("terminal", "episode")) else "black"))
    return np.asarray(canvas)
