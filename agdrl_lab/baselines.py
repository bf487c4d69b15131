"""Model-free reference rows: Stable-Baselines3 SAC and PPO (the ``sb3`` extra) trained for
the same env-step budget and evaluated with the agent's protocol (a separate env seeded
``seed + 10000``, N deterministic episodes every ``eval_every`` steps, the same
``evaluations.csv`` columns), so their curves sit beside AGD-MBRL's."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from agdrl.config import require, require_choice, require_finite, require_positive, require_seed
from agdrl.envs import make_env
from agdrl.evaluation import evaluate_policy


@dataclass(frozen=True)
class BaselineConfig:
    """A Stable-Baselines3 run with its default hyper-parameters."""

    algo: Literal["sac", "ppo"] = "sac"
    """Stable-Baselines3 algorithm."""
    env: str = "InvertedPendulum-v5"
    """Gymnasium task id."""
    seed: int = 0
    """Seed of the algorithm and of both environments."""
    total_steps: int = 20_000
    """Real environment steps (PPO rounds up to whole rollouts of its n_steps = 2048)."""
    eval_every: int = 1_000
    """Environment steps between evaluations."""
    eval_episodes: int = 10
    """Episodes per evaluation, deterministic action."""

    def __post_init__(self):
        require_finite(self)
        require_seed(self)
        require_choice(self, "algo", ("sac", "ppo"))
        require_positive(self, "total_steps", "eval_every", "eval_episodes")
        require(self.eval_every <= self.total_steps, "eval_every exceeds total_steps")


def train_baseline(cfg: BaselineConfig, run_dir: str | Path) -> list[dict[str, float]]:
    """Train and evaluate; writes ``config.json`` and ``evaluations.csv`` (rewritten after each
    evaluation) into ``run_dir``."""
    try:
        from stable_baselines3 import PPO, SAC
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError as err:
        raise ImportError("model-free baselines need Stable-Baselines3: "
                          "pip install 'agdrl[sb3]'") from err
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    env = make_env(cfg.env, seed=cfg.seed)
    eval_env = make_env(cfg.env, seed=cfg.seed + 10_000)
    algo = {"sac": SAC, "ppo": PPO}[cfg.algo]
    model = algo("MlpPolicy", env, seed=cfg.seed, verbose=0, device="cpu")
    rows: list[dict[str, float]] = []
    start = time.perf_counter()

    class Evaluate(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % cfg.eval_every == 0:
                returns = evaluate_policy(
                    eval_env, lambda obs: model.predict(obs, deterministic=True)[0],
                    cfg.eval_episodes)
                rows.append({"env_step": self.num_timesteps,
                             "mean_return": sum(returns) / len(returns),
                             "std_return": float(np.std(returns)),
                             "episodes": len(returns),
                             "wall_s": round(time.perf_counter() - start, 2)})
                # after every evaluation, so a long run shows its curve as it goes
                write_rows(rows, run_dir / "evaluations.csv")
            return True

    model.learn(total_timesteps=cfg.total_steps, callback=Evaluate())
    return rows


def write_rows(rows: list[dict[str, float]], path: Path) -> None:
    """Write the evaluations so far to ``path`` (a CSV with a header)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
