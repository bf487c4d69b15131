"""What each bad input produces: runs ``agdrl`` in-process on a catalogue of bad command lines,
run-directory files and sweep specs, and sorts each outcome into a clear line (one
``agdrl: …`` line naming what is at fault), tyro's box (exit 2, for what cannot be parsed), a
traceback, or silent acceptance; writes the table and the counts as markdown.

    .venv/bin/python benchmarks/bad_inputs.py --out results/reliability/bad_inputs.md

Each case carries the words its message must contain (``tests/test_bad_inputs.py`` checks
them all). Placeholders in a command line: RUN (a copy of a tiny trained run, changed by the
case's ``setup``), TMP (an empty folder), FILE (a file), LOCKED (a run directory that another
process holds), SPEC (``TMP/spec.json``, written by ``setup``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLEAR, TYRO, TRACEBACK, ACCEPTED = "clear line", "tyro box", "traceback", "silently accepted"
OUTCOMES = (CLEAR, TYRO, TRACEBACK, ACCEPTED)

TIMEOUT_S = 120
"""A case still running after this long has accepted its input."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input and the answer it must get."""

    argv: tuple[str, ...]
    """The agdrl command line (with placeholders)."""
    expect: str
    """Words the message must contain (for tyro's box: words of its error text)."""
    kind: str = CLEAR
    """The outcome it must have: CLEAR or TYRO."""
    setup: Callable[[Path], None] | None = None
    """Changes the folder that RUN (or SPEC's folder) names before the command runs."""
    category: str = "flag"
    """What is bad: flag, run directory, file, spec, env, device, size."""


def case(*argv: str, expect: str, kind: str = CLEAR, setup: Callable[[Path], None] | None = None,
         category: str = "flag") -> Case:
    return Case(tuple(argv), expect, kind, setup, category)


# ---------------------------------------------------------------- changes to a run's files
def _saved_agents(run: Path) -> list[Path]:
    return [run / "model", *sorted((run / "checkpoints").glob("step_*"))]


def _edit_json(name: str, change: Callable[[Any], Any], folders=_saved_agents
               ) -> Callable[[Path], None]:
    """Edit ``name`` in every saved agent of the run, as by hand: the manifests go, so that
    the edit is read rather than caught as damage."""

    def setup(run: Path) -> None:
        for folder in folders(run):
            path = folder / name
            raw = json.loads(path.read_text())
            path.write_text(json.dumps(change(raw)))
            (folder / "manifest.json").unlink(missing_ok=True)

    return setup


def _write_bytes(name: str, content: Callable[[bytes], bytes], folders=_saved_agents
                 ) -> Callable[[Path], None]:
    def setup(run: Path) -> None:
        for folder in folders(run):
            path = folder / name
            path.write_bytes(content(path.read_bytes()))
            (folder / "manifest.json").unlink(missing_ok=True)

    return setup


def _checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("step_*"))


def _set(path: str, value: Any) -> Callable[[Any], Any]:
    """Set the dotted ``path`` of a JSON object to ``value`` (None deletes it)."""

    def change(raw: Any) -> Any:
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
        return raw

    return change


def _spec(content: Any) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        data = content if isinstance(content, bytes) else json.dumps(content).encode()
        (tmp / "spec.json").write_bytes(data)

    return setup


def _log_row(run: Path, row: str = "abc,1.0,0.0,1,0.1") -> None:
    with open(run / "evaluations.csv", "a") as f:
        f.write(row + "\n")


BINARY = b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary"
TRAIN = ("train", "tiny")
TINY_RUN = ("--total-steps", "200", "--prefill-steps", "120")

CASES: list[Case] = [
    # -------------------------------------------------- values a config refuses
    case("train", "--total-steps", "0", expect="total_steps must be positive, got 0"),
    case("train", "--total-steps", "-5", expect="total_steps must be positive, got -5"),
    case("train", "--prefill-steps", "50000", expect="the agent would never train"),
    case("train", "--diffusion.horizon", "1", expect="horizon must be at least 2, got 1"),
    case("train", "--diffusion.num-steps", "0", expect="num_steps must be positive, got 0"),
    case("train", "--imagination.sampler-steps", "500",
         expect="exceeds the world model's diffusion steps"),
    case("train", "--imagination.batch-size", "0", expect="batch_size must be positive"),
    case("train", "--agent.gamma", "1.5", expect="gamma must be in (0, 1], got 1.5"),
    case("train", "--agent.min-std", "2", "--agent.init-std", "1",
         expect="need 0 < min_std < init_std"),
    case("train", "--diffusion.ema-decay", "1", expect="ema_decay must be in [0, 1)"),
    case("train", "--imagination.policy-guidance", "pull",
         "--imagination.experimental.resample-actions", expect="it needs policy_guidance 'sample'"),
    case("train", "--diffusion.denoiser.kind", "transformer", "--diffusion.denoiser.width", "30",
         "--diffusion.denoiser.heads", "4", expect="must be even and divide by heads 4"),
    case("train", "--seed", "-1", expect="seed must be in [0, 2**32), got -1"),
    case("train", "--seed", str(2**70), expect="seed must be in [0, 2**32)"),
    case("train", "--eval-episodes", "0", expect="eval_episodes must be positive"),
    case("train", "--keep-checkpoints", "0", expect="keep_checkpoints must be positive"),
    case("train", "--world-model", "ensemble", "--guidance", "none", "--ensemble.elites", "9",
         expect="elites must be in [1, members=7], got 9"),
    case("train", "--world-model", "ensemble", expect="the ensemble row takes guidance 'none'"),
    case("train", "--imagination.cuda-graph", expect="it needs world_model 'diffusion' and a "
                                                     "'cuda' device"),
    case("train", "--guidance", "none", "--imagination.guidance-mode", "resample",
         expect="guidance_mode 'resample' weights segments"),
    case("train", "--diffusion.student-steps", "3", expect="must be a multiple of student_steps"),
    case("train", "--imagination.policy-relaxation", "0",
         expect="policy_relaxation must be in (0, 1]"),
    case("train", "--diffusion.condition-dropout", "1",
         expect="condition_dropout must be in [0, 1)"),
    case("train", "--imagination.guidance-scale", "-1",
         expect="guidance_scale must be non-negative"),
    case("train", "--agent.layers", "0", expect="layers must be in [1, 256], got 0"),
    # -------------------------------------------------- non-finite numbers
    case("train", "--agent.gamma", "nan", expect="gamma must be a finite number, got nan"),
    case("train", "--imagination.guidance-scale", "inf",
         expect="guidance_scale must be a finite number, got inf"),
    case("train", "--diffusion.lr", "inf", expect="lr must be a finite number, got inf"),
    case("train", "--agent.actor-lr", "nan", expect="actor_lr must be a finite number"),
    case("train", "--diffusion.schedule-tau", "inf", expect="schedule_tau must be a finite"),
    case("train", "--imagination.cfg-weight", "-inf",
         expect="cfg_weight must be a finite number, got -inf"),
    case("train", "--world-model", "ensemble", "--guidance", "none", "--ensemble.lr", "nan",
         expect="lr must be a finite number, got nan"),
    # -------------------------------------------------- sizes that cannot fit
    case(*TRAIN, "--diffusion.denoiser.width", "1000000", expect="training them needs at least",
         category="size"),
    case(*TRAIN, "--diffusion.denoiser.depth", "10000000",
         expect="depth must be in [1, 256], got 10000000", category="size"),
    case(*TRAIN, "--diffusion.denoiser.depth", "200", "--diffusion.denoiser.width", "100000",
         expect="lower diffusion.denoiser.width or diffusion.denoiser.depth", category="size"),
    case(*TRAIN, "--agent.hidden", "1000000", expect="training them needs at least",
         category="size"),
    case(*TRAIN, "--world-model", "ensemble", "--guidance", "none", "--ensemble.width",
         "1000000", expect="lower ensemble.width, ensemble.depth or ensemble.members",
         category="size"),
    case(*TRAIN, "--diffusion.denoiser.kind", "unet", "--diffusion.denoiser.width", "100000",
         expect="training them needs at least", category="size"),
    # -------------------------------------------------- devices
    case(*TRAIN, "--device", "gpu", expect="device 'gpu' is not a torch device",
         category="device"),
    case(*TRAIN, "--device", "cuda:99", expect="device 'cuda:99' is not available",
         category="device"),
    case(*TRAIN, "--device", "xla", expect="agdrl runs on cpu, cuda or mps", category="device"),
    case(*TRAIN, "--device", "mps", expect="device 'mps' is not available", category="device"),
    # -------------------------------------------------- environments
    case(*TRAIN, "--env", "NoSuchEnv-v0", *TINY_RUN, expect="Environment `NoSuchEnv` doesn't exist",
         category="env"),
    case(*TRAIN, "--env", "CartPole-v1", *TINY_RUN, expect="needs Box action spaces",
         category="env"),
    case(*TRAIN, "--env", "nosuchmodule:Thing-v0", expect="No module named 'nosuchmodule'",
         category="env"),
    case(*TRAIN, "--env", "Hopper-v99", expect="Environment version `v99` for environment "
         "`Hopper` doesn't exist", category="env"),
    # -------------------------------------------------- what tyro cannot parse
    case("train", "--total-steps", "abc", expect="abc", kind=TYRO),
    case("train", "--guidance", "magic", expect="magic", kind=TYRO),
    case("train", "--advantage", "mc", expect="mc", kind=TYRO),
    case("train", "--imagination.sampler", "euler", expect="euler", kind=TYRO),
    case("train", "--on-nonfinite", "ignore", expect="ignore", kind=TYRO),
    case("train", "turbo", expect="turbo", kind=TYRO),
    case("train", "--no-such-option", "3", expect="--no-such-option", kind=TYRO),
    case("train", "--seed", "1.5", expect="1.5", kind=TYRO),
    case("resume", expect="missing from agdrl resume", kind=TYRO),
    case("eval", "RUN", "--episodes", "many", expect="many", kind=TYRO),
    case("resume", "RUN", "--guidance", "eag", expect="--guidance", kind=TYRO),
    case("bench", "--spec", expect="--spec", kind=TYRO),
    case("nonsense", expect="unknown command 'nonsense'"),
    # -------------------------------------------------- run directories
    case(*TRAIN, "--run-dir", "FILE/run", *TINY_RUN, expect="cannot write to the run directory",
         category="run directory"),
    case(*TRAIN, "--run-dir", "RUN", *TINY_RUN, expect="holds another run",
         category="run directory"),
    case(*TRAIN, "--run-dir", "LOCKED", *TINY_RUN, expect="is in use by another writer: pid",
         category="run directory"),
    case("resume", "LOCKED", expect="is in use by another writer: pid",
         category="run directory"),
    case("resume", "TMP/none", expect="has no complete checkpoint to resume from",
         category="run directory"),
    case("eval", "TMP/none", expect="does not exist", category="run directory"),
    case("eval", "RUN", "--episodes", "0", expect="episodes must be positive, got 0"),
    case("eval", "RUN", "--env", "Hopper-v5", expect="trained on InvertedPendulum-v5 "
         "(observation shape (4,), action shape (1,)), but Hopper-v5 has observation shape",
         category="env"),
    case("eval", "RUN", "--device", "cuda:99", expect="device 'cuda:99' is not available",
         category="device"),
    case("dream", "TMP", expect="has no replay buffer", category="run directory"),
    case("dream", "RUN", "--starts", "0", expect="starts must be positive, got 0"),
    # -------------------------------------------------- saved agents' config.json, by hand
    case("eval", "RUN", expect="config.json is not JSON text",
         setup=_write_bytes("config.json", lambda b: BINARY), category="file"),
    case("eval", "RUN", expect="config.json is not valid JSON",
         setup=_write_bytes("config.json", lambda b: b[: len(b) // 2]), category="file"),
    case("eval", "RUN", expect="config.diffusion.horizon must be an integer, got a string",
         setup=_edit_json("config.json", _set("config.diffusion.horizon", "ten")),
         category="file"),
    case("eval", "RUN", expect="unknown field(s) config.diffusion.horizn",
         setup=_edit_json("config.json", lambda r: {**r, "config": {**r["config"], "diffusion": {
             **r["config"]["diffusion"], "horizn": 10}}}), category="file"),
    case("eval", "RUN", expect="field 'num_timesteps' is missing",
         setup=_edit_json("config.json", _set("num_timesteps", None)), category="file"),
    case("eval", "RUN", expect="config.imagination.guidance must be one of",
         setup=_edit_json("config.json", _set("config.imagination.guidance", "magic")),
         category="file"),
    case("eval", "RUN", expect="gamma must be a finite number, got nan",
         setup=_edit_json("config.json", _set("config.agent.gamma", float("nan"))),
         category="file"),
    case("eval", "RUN", expect="config.json must hold a JSON object",
         setup=_edit_json("config.json", lambda raw: [raw]), category="file"),
    case("eval", "RUN", expect="config.seed must be an integer, got a number",
         setup=_edit_json("config.json", _set("config.seed", 1e30)), category="file"),
    case("eval", "RUN", expect="num_timesteps must be ≥ 0, got -3",
         setup=_edit_json("config.json", _set("num_timesteps", -3)), category="file"),
    case("eval", "RUN", expect="observation_shape must be a list of integers",
         setup=_edit_json("config.json", _set("observation_shape", "x")), category="file"),
    case("eval", "RUN", expect="config.total_steps must be positive, got 0",
         setup=_edit_json("config.json", _set("config.total_steps", 0)), category="file"),
    # -------------------------------------------------- checkpoints' training_state.json
    case("resume", "RUN", expect="training_state.json is not JSON text",
         setup=_write_bytes("training_state.json", lambda b: BINARY, _checkpoints),
         category="file"),
    case("resume", "RUN", expect="training_state.json: field 'obs' is missing",
         setup=_edit_json("training_state.json", _set("obs", None), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="training_state.json: num_timesteps must be an integer",
         setup=_edit_json("training_state.json", _set("num_timesteps", "150"), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="unsupported checkpoint format_version 99",
         setup=_edit_json("training_state.json", _set("format_version", 99), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="differs from config.json's",
         setup=_edit_json("training_state.json", _set("num_timesteps", 999), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="obs has 3 numbers, the env's observations 4",
         setup=_edit_json("training_state.json", _set("obs", [0.0, 0.0, 0.0]), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="training_state.json: seconds.model must be a number",
         setup=_edit_json("training_state.json", _set("seconds.model", "fast"), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="the entries of Progress cannot be restored",
         setup=_edit_json("training_state.json", _set("env", {}), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="training_state.json: numpy_rng is not the state of a PCG64",
         setup=_edit_json("training_state.json", _set("numpy_rng", {"state": 1}), _checkpoints),
         category="file"),
    case("resume", "RUN", expect="evaluations.csv, line 4: env_step 'abc' is not an integer",
         setup=_log_row, category="file"),
    case("report", "--runs-dir", "RUN", expect="evaluations.csv, line 4: mean_return is nan, "
         "which cannot be scored", setup=lambda run: _log_row(run, "400,nan,0.0,1,0.1"),
         category="file"),
    case("report", "--runs-dir", "RUN", expect="evaluations.csv, line 4: env_step 'abc' and "
         "mean_return '1.0' must be an integer and a number", setup=_log_row, category="file"),
    case("resume", "RUN", expect="manifest.json must map file names to SHA-256 sums",
         setup=lambda run: [(f / "manifest.json").write_text("[1, 2]")
                            for f in _checkpoints(run)], category="file"),
    # -------------------------------------------------- sweep specs
    case("bench", "--spec", "SPEC", "--dry-run", expect="tasks must be a list of strings, got "
         "a string 'Hopper-v5'", setup=_spec({"tasks": "Hopper-v5"}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="seeds[0] must be an integer, got a "
         "string '0'", setup=_spec({"seeds": ["0"]}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="total_steps must be an integer, got a "
         "string", setup=_spec({"total_steps": "1e5"}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="unknown field(s) task",
         setup=_spec({"task": ["Hopper-v5"]}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="must be a JSON object, got a list",
         setup=_spec([1, 2]), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="spec.json is not JSON text",
         setup=_spec(BINARY), category="spec"),
    case("bench", "--spec", "TMP/none.json", "--dry-run", expect="none.json is missing",
         category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="unknown method(s) agd-sagg",
         setup=_spec({"methods": ["agd-sagg"]}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="dry_run must be a boolean",
         setup=_spec({"dry_run": "yes"}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="runs_dir must be a path",
         setup=_spec({"runs_dir": 5}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="seeds must be in [0, 2**32)",
         setup=_spec({"seeds": [-1]}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="unknown Gymnasium task(s) NoSuch-v9",
         setup=_spec({"tasks": ["NoSuch-v9"]}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="parallel must be positive",
         setup=_spec({"parallel": 0}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="eval_every must be an integer, got a "
         "number 1.5", setup=_spec({"eval_every": 1.5}), category="spec"),
    case("bench", "--spec", "SPEC", "--dry-run", expect="the sweep spec",
         setup=_spec({"total_steps": 0}), category="spec"),
    case("bench", "--seeds", "-1", "--dry-run", expect="seeds must be in [0, 2**32)"),
    case("bench", "--methods", "nope", "--dry-run", expect="unknown method(s) nope"),
    case("bench", "--total-steps", "0", "--dry-run", expect="total_steps must be positive"),
    # -------------------------------------------------- the other commands
    case("baseline", "--algo", "ddpg", expect="ddpg", kind=TYRO),
    case("baseline", "--seed", "-3", expect="seed must be in [0, 2**32), got -3"),
    case("baseline", "--eval-every", "0", expect="eval_every must be positive"),
    case("avalanche", "--train-steps", "0", expect="train_steps must be positive"),
    case("avalanche", "--behavior", "random", "--samplers", "euler:4",
         expect="unknown sampler 'euler'"),
    case("avalanche", "--behavior", "random", "--env", "CartPole-v1", expect="Discrete"),
]


@dataclasses.dataclass
class Outcome:
    kind: str
    code: int | str | None
    message: str


class _StillRunning(Exception):
    pass


def run_case(case: Case, argv: list[str]) -> Outcome:
    """``agdrl argv`` in this process, sorted into one of :data:`OUTCOMES`."""
    from agdrl.cli import main

    err = io.StringIO()

    def stop(signum, frame):
        raise _StillRunning

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(TIMEOUT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        return Outcome(ACCEPTED, code, "(no error)")
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            one_line = exit_.code.startswith("agdrl: ") and "\n" not in exit_.code
            return Outcome(CLEAR if one_line else TRACEBACK, 1, exit_.code)
        text = err.getvalue()
        if exit_.code == 2 and "Traceback" not in text:
            return Outcome(TYRO, 2, " ".join(text.split()))
        return Outcome(ACCEPTED if exit_.code == 0 else TRACEBACK, exit_.code, text.strip())
    except _StillRunning:
        return Outcome(ACCEPTED, None, f"(still running after {TIMEOUT_S} s)")
    except Exception:
        return Outcome(TRACEBACK, None, traceback.format_exc(limit=-1).strip().splitlines()[-1])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclasses.dataclass
class Workspace:
    """The folders the placeholders name, with a tiny trained run to copy for each case."""

    root: Path
    trained: Path
    locked: Path
    holder: subprocess.Popen

    @classmethod
    def create(cls, root: Path) -> Workspace:
        from agdrl import AGDMBRL, PRESETS

        cfg = dataclasses.replace(PRESETS["tiny"], prefill_steps=120, pretrain_steps=10,
                                  eval_every=100, eval_episodes=1, checkpoint_every=100)
        trained = root / "trained"
        model = AGDMBRL("InvertedPendulum-v5", cfg, run_dir=trained).learn(200)
        model.save(trained / "model")
        model.close()
        locked = root / "locked"
        shutil.copytree(trained, locked)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from agdrl.run_directory import "
             "RunDirectory; held = RunDirectory.claim(sys.argv[1], fresh=False); "
             "print('held', flush=True); time.sleep(3600)", str(locked)],
            stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        (root / "file").write_text("a file, not a directory")
        return cls(root, trained, locked, holder)

    def argv(self, case: Case, index: int) -> list[str]:
        """The case's command line, its folders made (a fresh copy of the run, changed)."""
        tmp = self.root / f"case{index:03d}"
        tmp.mkdir()
        run = tmp / "run"
        if "RUN" in case.argv:
            shutil.copytree(self.trained, run)
        if case.setup is not None:
            case.setup(run if "RUN" in case.argv else tmp)
        names = {"RUN": run, "TMP": tmp, "FILE": self.root / "file", "LOCKED": self.locked,
                 "SPEC": tmp / "spec.json"}
        return [str(names[a.split("/")[0]]) + a[len(a.split("/")[0]):]
                if a.split("/")[0] in names else a for a in case.argv]

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


def run_catalogue(root: Path, log: Callable[[str], None] = print
                  ) -> list[tuple[Case, list[str], Outcome]]:
    """Every case of :data:`CASES` in a workspace under ``root``."""
    workspace = Workspace.create(root)
    results = []
    try:
        for i, c in enumerate(CASES):
            argv = workspace.argv(c, i)
            outcome = run_case(c, argv)
            results.append((c, argv, outcome))
            log(f"{outcome.kind}: agdrl {' '.join(argv)}: {outcome.message[:200]}")
    finally:
        workspace.close()
    return results


def expected(case: Case, outcome: Outcome) -> bool:
    """Whether the case got the answer it must get."""
    return outcome.kind == case.kind and case.expect.lower() in outcome.message.lower()


def counts(results: list[tuple[Case, list[str], Outcome]]) -> dict[str, int]:
    found = {kind: sum(o.kind == kind for _, _, o in results) for kind in OUTCOMES}
    return {"tried": len(results), **found,
            "as expected": sum(expected(c, o) for c, _, o in results)}


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    results = run_catalogue(root, log=lambda msg: print(msg, flush=True))
    summary = counts(results)
    lines = ["| category | command line | outcome | exit | message |", "|---|---|---|---|---|"]
    for c, argv, outcome in results:
        shown = " ".join(a.replace(str(root), "…") for a in argv)
        message = outcome.message.replace(str(root), "…").replace("|", "\\|")
        mark = "" if expected(c, outcome) else " (unexpected)"
        lines.append(f"| {c.category} | `agdrl {shown}` | {outcome.kind}{mark} | "
                     f"{outcome.code} | {message} |")
    table = "\n".join(lines)
    head = ", ".join(f"{k}: {v}" for k, v in summary.items())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# Bad inputs\n\n{head}\n\nMade by `.venv/bin/python "
                        f"benchmarks/bad_inputs.py --out {args.out}`.\n\n{table}\n")
    print(head)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main_()
