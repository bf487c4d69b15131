"""The run directory's logs: config.json, evaluations.csv, train_metrics.csv, TensorBoard
and, optionally, Weights & Biases."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from agdrl.faults import RunDirectoryError


def truncate_csv(path: Path, last_step: int) -> None:
    """Keep the header and the rows with env_step ≤ last_step (rewritten atomically)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1]
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            step = int(row[0])
        except ValueError:
            raise ValueError(f"{path}, line {line}: env_step {row[0]!r} is not an integer (a "
                             "damaged or hand-edited log)") from None
        if step <= last_step:
            kept.append(row)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunLog:
    """The run directory's logs: ``config.json``, ``evaluations.csv``, ``train_metrics.csv``,
    TensorBoard event files, and (optionally) the same scalars in Weights & Biases."""

    def __init__(self, run_dir: Path, cfg: Any, resume_step: int | None = None):
        """``resume_step``: continue a run whose last checkpoint is at that step, dropping what
        was logged after it (so no step is logged twice); None: a fresh run (whose directory
        holds no earlier run's files: :class:`agdrl.run_directory.RunDirectory`)."""
        from torch.utils.tensorboard import SummaryWriter

        self.eval_path = run_dir / "evaluations.csv"
        self.train_path = run_dir / "train_metrics.csv"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
            if resume_step is not None:
                for path in (self.eval_path, self.train_path):
                    truncate_csv(path, resume_step)
            # TensorBoard hides the events an earlier writer logged at or after purge_step
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=None
                                        if resume_step is None else resume_step + 1)
        except OSError as err:
            raise RunDirectoryError(f"cannot write to the run directory {run_dir}: "
                                    f"{err}") from err
        self.wandb = None
        if cfg.wandb:
            try:
                import wandb
            except ImportError as err:
                raise ImportError("--wandb needs the 'wandb' extra: pip install "
                                  "'agdrl[wandb]'") from err
            # a resumed run continues the same W&B run (its id is kept in the run directory)
            id_file = run_dir / "wandb_run_id"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
            id_file.write_text(run_id)
            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(run_dir), id=run_id,
                                    resume="allow", config=dataclasses.asdict(cfg),
                                    name=run_dir.name)

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"{prefix}/{k}": v for k, v in values.items()}, step=step)

    @staticmethod
    def _append(path: Path, row: dict[str, float]) -> None:
        new = not path.exists()
        try:
            with open(path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row), restval="",
                                        extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)
        except OSError as err:
            raise RunDirectoryError(f"cannot write {path}: {err}") from err

    def train(self, step: int, metrics: dict[str, float]) -> None:
        self.scalars(step, metrics, "train")
        self._append(self.train_path, {"env_step": step, **metrics})

    def evaluation(self, step: int, returns: list[float], wall_s: float) -> None:
        self._append(self.eval_path, {
            "env_step": step, "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)), "episodes": len(returns),
            "wall_s": round(wall_s, 2)})
        self.scalars(step, {"mean_return": float(np.mean(returns))}, "eval")
        self.writer.flush()

    def video(self, tag: str, step: int, frames: list[np.ndarray], fps: int,
              mp4: Path) -> None:
        """A video in TensorBoard (an animated GIF image, as ``SummaryWriter.add_video``
        writes it, which would need moviepy) and, from its MP4 file, in W&B."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        from agdrl.evaluation import encode_gif

        height, width = frames[0].shape[:2]
        image = Summary.Image(height=height, width=width, colorspace=3,
                              encoded_image_string=encode_gif(frames, fps))
        self.writer._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.writer.flush()
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Video(str(mp4), format="mp4")}, step=step)

    def close(self) -> None:
        self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_evaluations(folder: Path) -> list[dict[str, str]]:
    """The rows of a run's ``evaluations.csv`` (the trainer and the SB3 baselines write the
    same columns: env_step, mean_return, std_return, episodes, wall_s)."""
    with open(folder / "evaluations.csv", newline="") as f:
        return list(csv.DictReader(f))
