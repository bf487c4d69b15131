"""agdrl report on runs with known returns: IQM, intervals, budgets, normalized scores, the
files it writes, and bad input."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from agdrl.cli import main
from agdrl.config import ConfigError
from agdrl_lab.report import ReportConfig, find_dreams, find_runs, iqm_with_ci, write_report

TASK = "InvertedPendulum-v5"  # Gymnasium's reward_threshold: 950
FINAL = {"fast-learner": [100.0, 200.0, 300.0, 1000.0], "slow-learner": [10.0, 20.0, 30.0, 40.0]}


def make_runs(root: Path) -> None:
    """Four seeds per method, evaluated at 500 and 1000 steps; the 500-step return is a tenth
    of the final one; each run took 2 s per 1000 steps."""
    for method, finals in FINAL.items():
        for seed, final in enumerate(finals):
            folder = root / TASK / method / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(json.dumps({"env": TASK, "seed": seed}))
            (folder / "bench_run.json").write_text(json.dumps({"method": method, "state": "done"}))
            with open(folder / "evaluations.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["env_step", "mean_return", "std_return", "episodes", "wall_s"])
                writer.writerow([500, final / 10, 0.0, 10, 1.0])
                writer.writerow([1000, final, 0.0, 10, 2.0])


def iqm(x: list[float]) -> float:
    """Mean of the middle half (4 values: the middle two)."""
    x = sorted(x)
    return float(np.mean(x[1:-1]))


def test_report_statistics_match_hand_computed_values(tmp_path: Path):
    make_runs(tmp_path)
    path = write_report(ReportConfig(runs_dir=tmp_path, budgets=(700, 1000), reps=500))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    for method, finals in FINAL.items():
        at_final = report["raw"][f"{TASK}@1000"][method]
        assert at_final["iqm"] == pytest.approx(iqm(finals))
        lo, hi = at_final["ci95"]
        assert min(finals) <= lo <= at_final["iqm"] <= hi <= max(finals)
        # budget 700 has no evaluation of its own: the one at 500 stands for it
        assert report["raw"][f"{TASK}@700"][method]["iqm"] == pytest.approx(iqm(finals) / 10)
    # normalized by the measured random policy and the task's threshold
    random_return = report["anchors"][TASK]["random"]
    assert report["anchors"][TASK]["threshold"] == 950.0
    assert 0 < random_return < 100  # the pendulum falls within a few dozen steps
    expected = iqm([(r - random_return) / (950.0 - random_return)
                    for r in FINAL["fast-learner"]])
    assert report["normalized"]["fast-learner"][0] == pytest.approx(expected)
    text = path.read_text()
    assert "| fast-learner | 4 | 250.0 |" in text and "| slow-learner | 4 | 25.0 |" in text
    # the summary: one line per task at its last budget, methods as columns
    assert "| task (budget) | random | fast-learner | slow-learner |" in text
    assert re.search(rf"\| {TASK} \(1000\) \| {random_return:.1f} \| 250\.0 \[[0-9.]+, "
                     r"[0-9.]+\] \(4\) \| 25\.0 \[[0-9.]+, [0-9.]+\] \(4\) \|", text)
    assert "| 2.0 |" in text  # 2 s over 1000 steps: 2 ms per env step
    png = (tmp_path / "report" / f"curves_{TASK}.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_an_interval_is_the_same_on_every_call_and_whatever_the_other_methods():
    rng = np.random.default_rng(0)
    alone = {"a": rng.normal(size=(5, 2))}
    joined = {"b": rng.normal(size=(5, 2)), **alone, "c": rng.normal(size=(5, 2))}
    np.random.seed(7)
    callers_next_draw = np.random.uniform()
    np.random.seed(7)
    a_alone = iqm_with_ci(alone, reps=300, seed=3)["a"]
    assert np.random.uniform() == callers_next_draw  # numpy's global stream is given back
    assert iqm_with_ci(alone, reps=300, seed=3)["a"] == a_alone  # the same on every call
    assert iqm_with_ci(joined, reps=300, seed=3)["a"] == a_alone
    # the interval is a bootstrap interval, not a constant: another seed moves it
    assert iqm_with_ci(alone, reps=300, seed=4)["a"][1:] != a_alone[1:]


def test_a_run_made_by_hand_is_scored_under_its_folders_name(tmp_path: Path):
    make_runs(tmp_path)
    for status in tmp_path.rglob("bench_run.json"):
        status.unlink()
    lone = tmp_path / TASK / "my-try"
    lone.mkdir()
    for name in ("config.json", "evaluations.csv"):
        (lone / name).write_bytes((tmp_path / TASK / "slow-learner" / "seed0" / name)
                                  .read_bytes())
    assert {r.method for r in find_runs(tmp_path)[0]} == {"fast-learner", "slow-learner",
                                                          "my-try"}
    status = tmp_path / TASK / "slow-learner" / "seed1" / "bench_run.json"
    status.write_text(json.dumps({"state": "done"}))
    with pytest.raises(ConfigError, match=r"bench_run\.json does not name its method"):
        find_runs(tmp_path)


def test_unfinished_sweep_runs_are_listed_not_scored(tmp_path: Path):
    make_runs(tmp_path)
    status = tmp_path / TASK / "fast-learner" / "seed3" / "bench_run.json"
    status.write_text(json.dumps({"method": "fast-learner", "state": "running"}))
    path = write_report(ReportConfig(runs_dir=tmp_path, reps=200))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["raw"][f"{TASK}@1000"]["fast-learner"]["returns"] == [100.0, 200.0, 300.0]
    assert f"Not finished, not scored: {TASK}/fast-learner/seed3." in path.read_text()
    # a report of other methods does not list it
    path = write_report(ReportConfig(runs_dir=tmp_path, reps=200, methods=("slow-learner",)))
    assert "Not finished" not in path.read_text()


def test_source_versions_are_listed_per_row(tmp_path: Path):
    make_runs(tmp_path)
    for seed, source in enumerate([{"commit": "a" * 40, "dirty": False},
                                   {"commit": "b" * 40, "dirty": True}, None]):
        status = tmp_path / TASK / "fast-learner" / f"seed{seed}" / "bench_run.json"
        status.write_text(json.dumps({"method": "fast-learner", "state": "done",
                                      **({"source": source} if source else {})}))
    text = write_report(ReportConfig(runs_dir=tmp_path, reps=200)).read_text()
    assert (f"| {TASK} | fast-learner | aaaaaaa (1), bbbbbbb+dirty (1), unrecorded (2) |"
            in text)
    assert f"| {TASK} | slow-learner | unrecorded (4) |" in text


def test_a_run_whose_clock_restarted_is_left_out_of_the_wall_clock(tmp_path: Path):
    """Runs resumed by an older agdrl logged wall_s from zero again after the resume; their
    seconds per env step would be too small, so the column uses the other seeds."""
    make_runs(tmp_path)
    for seed in (0, 1):  # 2 s at 500 steps, then 0.1 s at 1000 (the median would be 1.05 ms)
        with open(tmp_path / TASK / "fast-learner" / f"seed{seed}" / "evaluations.csv", "w",
                  newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["env_step", "mean_return", "std_return", "episodes", "wall_s"])
            writer.writerow([500, FINAL["fast-learner"][seed] / 10, 0.0, 10, 2.0])
            writer.writerow([1000, FINAL["fast-learner"][seed], 0.0, 10, 0.1])
    text = write_report(ReportConfig(runs_dir=tmp_path, reps=200)).read_text()
    assert "| 2.0 (2 of 4 runs) |" in text
    assert (f"left out of the wall-clock column: {TASK}/fast-learner/seed0, "
            f"{TASK}/fast-learner/seed1." in text)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["clock_restarted"] for r in report["runs"]].count(True) == 2


def test_report_refuses_an_empty_folder(tmp_path: Path):
    with pytest.raises(ConfigError, match="no runs"):
        write_report(ReportConfig(runs_dir=tmp_path))
    with pytest.raises(SystemExit, match=r"^agdrl: no runs"):
        main(["report", "--runs-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="budgets must be positive"):
        main(["report", "--runs-dir", str(tmp_path), "--budgets", "0"])


@pytest.mark.parametrize("row, message", [
    ("1500,nan,0.0,10,3.0", r"seed2/evaluations.csv, line 4: mean_return is nan"),
    ("1500,inf,0.0,10,3.0", r"seed2/evaluations.csv, line 4: mean_return is inf"),
    ("1500,,0.0,10,3.0", r"seed2/evaluations.csv, line 4: env_step '1500' and mean_return ''"),
    ("x,1.0,0.0,10,3.0", r"line 4: env_step 'x' and mean_return '1.0' must be an integer"),
])
def test_a_row_that_cannot_be_scored_is_named_not_scored_as_nan(tmp_path: Path, row: str,
                                                                 message: str):
    make_runs(tmp_path)
    with open(tmp_path / TASK / "slow-learner" / "seed2" / "evaluations.csv", "a") as f:
        f.write(row + "\n")
    with pytest.raises(SystemExit, match=r"^agdrl: .*" + message):
        main(["report", "--runs-dir", str(tmp_path)])
    assert not (tmp_path / "report").exists()


def test_a_run_that_stopped_before_the_budget_is_listed_not_scored(tmp_path: Path):
    """A run that ended at 500 steps has no return at 1000: it is not scored as if its last
    evaluation stood for the budget, and the report says which run and why."""
    make_runs(tmp_path)
    short = tmp_path / TASK / "slow-learner" / "seed3" / "evaluations.csv"
    short.write_text("\n".join(short.read_text().splitlines()[:2]) + "\n")  # header + 500
    path = write_report(ReportConfig(runs_dir=tmp_path, budgets=(500, 1000), reps=200))
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["raw"][f"{TASK}@1000"]["slow-learner"]["returns"] == [10.0, 20.0, 30.0]
    assert report["raw"][f"{TASK}@500"]["slow-learner"]["returns"] == [1.0, 2.0, 3.0, 4.0]
    text = path.read_text()
    assert (f"{TASK} at 1000: not scored (no evaluation by then, or the run stopped before): "
            f"{TASK}/slow-learner/seed3 (ends at 500)." in text)
    # without --budgets the table is at the shortest run's end, and the report says so
    text = write_report(ReportConfig(runs_dir=tmp_path, reps=200)).read_text()
    assert f"{TASK}: runs end at 500, 1000 env steps; the table is at the shortest (500)" in text


def test_one_seed_has_no_interval_and_the_wall_clock_says_how_runs_shared_the_machine(
        tmp_path: Path):
    make_runs(tmp_path)
    for seed in (1, 2, 3):
        for path in (tmp_path / TASK / "slow-learner" / f"seed{seed}").iterdir():
            path.unlink()
        (tmp_path / TASK / "slow-learner" / f"seed{seed}").rmdir()
    for seed in range(4):
        status = tmp_path / TASK / "fast-learner" / f"seed{seed}" / "bench_run.json"
        status.write_text(json.dumps({"method": "fast-learner", "state": "done",
                                      "machine": {"parallel": 1 + seed % 2},
                                      "load_average": {"mean": 1.0 + seed}}))
    text = write_report(ReportConfig(runs_dir=tmp_path, reps=200)).read_text()
    assert "| slow-learner | 1 | 10.0 | — | 10.0 | 2.0 |" in text
    assert "| fast-learner | 4 | 250.0 |" in text
    assert "| 2.0 [1–2 at a time, load 2.5] |" in text  # the median of 1, 2, 3, 4
    normalized = text[text.index("## Normalized scores"):]  # the same holds across tasks
    assert re.search(r"\| slow-learner \| 1 \| -?[0-9.]+ \| — \|", normalized)
    assert re.search(r"\| fast-learner \| 4 \| [0-9.]+ \| \[[0-9.]+, [0-9.]+\] \|", normalized)


def test_a_sweep_run_whose_config_differs_from_its_row_today_is_scored_apart(tmp_path: Path):
    """A run made by the 'agd-sag' row before settle steps existed (its config lacks them and
    the field's former default, 0, is what it did) is not pooled with today's agd-sag: it is
    scored under the row and the fields that differ."""
    import dataclasses

    from agdrl import PRESETS
    from agdrl.config import resolve_for_task

    make_runs(tmp_path)
    old = dataclasses.asdict(resolve_for_task(dataclasses.replace(PRESETS["fast"], seed=0),
                                              TASK))
    del old["imagination"]["settle_steps"]
    folder = tmp_path / TASK / "fast-learner" / "seed0"
    (folder / "config.json").write_text(json.dumps(old))
    (folder / "bench_run.json").write_text(json.dumps({"method": "agd-sag", "state": "done"}))
    today = tmp_path / TASK / "fast-learner" / "seed1"
    (today / "config.json").write_text(json.dumps(dataclasses.asdict(resolve_for_task(
        dataclasses.replace(PRESETS["fast"], seed=1, total_steps=2000, eval_every=500), TASK))))
    (today / "bench_run.json").write_text(json.dumps({"method": "agd-sag", "state": "done",
                                                      "preset": "fast"}))
    runs, _ = find_runs(tmp_path)
    label = "agd-sag [imagination.settle_steps=0]"
    by_folder = {r.folder: (r.method, r.renamed_from) for r in runs}
    assert by_folder[folder] == (label, "agd-sag")
    assert by_folder[today] == ("agd-sag", None)  # budget and protocol are not its meaning
    text = write_report(ReportConfig(runs_dir=tmp_path, reps=200)).read_text()
    assert f"agd-sag → {label}: {TASK}/fast-learner/seed0" in text
    assert f"| {label} | 1 | 100.0 | — | 100.0 |" in text


def test_runs_of_another_folder_are_pooled_and_rows_can_be_picked(tmp_path: Path):
    """--also pools a second folder's runs (a slow variant run apart from the sweep) with
    RUNS_DIR's; --tasks/--methods keep only some rows; overlapping folders are refused."""
    make_runs(tmp_path / "sweep")
    slow = tmp_path / "slow" / TASK / "slow-variant" / "seed0"
    slow.mkdir(parents=True)
    (slow / "config.json").write_text(json.dumps({"env": TASK, "seed": 0}))
    (slow / "bench_run.json").write_text(json.dumps({"method": "slow-variant", "state": "done"}))
    (slow / "evaluations.csv").write_text(
        "env_step,mean_return,std_return,episodes,wall_s\n1000,123.0,0.0,10,20.0\n")
    cfg = ReportConfig(runs_dir=tmp_path / "sweep", also=(tmp_path / "slow",),
                       methods=("fast-learner", "slow-variant"), reps=200)
    text = write_report(cfg).read_text()
    report = json.loads((tmp_path / "sweep" / "report" / "report.json").read_text())
    assert set(report["raw"][f"{TASK}@1000"]) == {"fast-learner", "slow-variant"}
    assert report["raw"][f"{TASK}@1000"]["slow-variant"]["returns"] == [123.0]
    assert f"--also {tmp_path / 'slow'} --methods fast-learner slow-variant`" in text
    assert str(slow) in [r["folder"] for r in report["runs"]]  # outside RUNS_DIR: in full
    assert f"{TASK}/fast-learner/seed0" in [r["folder"] for r in report["runs"]]
    with pytest.raises(ConfigError, match="outside RUNS_DIR"):
        ReportConfig(runs_dir=tmp_path, also=(tmp_path / "slow",))
    with pytest.raises(ConfigError, match="of the tasks and methods asked for"):
        write_report(ReportConfig(runs_dir=tmp_path / "sweep", tasks=("Hopper-v5",)))


@pytest.fixture(scope="module")
def media_report(tmp_path_factory: pytest.TempPathFactory, tiny_hopper_run: Path) -> Path:
    """The report folder of runs with every kind of content report.html embeds: tables,
    learning curves, an error-avalanche folder, a guidance-lift folder, a dream made by
    ``agdrl dream`` and two made during training in a run's dreams/ folder."""
    from agdrl import AGDMBRL, ReplayBuffer
    from agdrl.checkpoint import complete_checkpoints
    from agdrl.dream import DreamConfig, dream
    from agdrl_lab.avalanche import plot_errors

    root = tmp_path_factory.mktemp("media_report")
    make_runs(root / "runs")
    avalanche = root / "avalanche" / "hopper-v5"
    avalanche.mkdir(parents=True)
    curve = {"mean": [0.01 * h for h in range(1, 11)], "q25": [0.005 * h for h in range(1, 11)],
             "q75": [0.02 * h for h in range(1, 11)]}
    result = {"config": {"env": "Hopper-v5"}, "gradient_steps": 10,
              "diffusion_config_resolved": {"horizon": 4},
              "errors": {"ensemble": curve, "diffusion_ddpm": curve, "diffusion_ddim:2": curve}}
    (avalanche / "results.json").write_text(json.dumps(result))
    plot_errors(result, avalanche / "error_vs_horizon.png")
    lift = root / "guidance_lift" / "hopper-v5"
    lift.mkdir(parents=True)
    (lift / "SUMMARY.md").write_text("sampler ddim:8\n\n| guidance | mean V |\n|---|---|\n"
                                     "| none | 1.250 |\n| sag | 1.750 |\n")
    model = AGDMBRL.load(tiny_hopper_run / "model")
    buffer = ReplayBuffer.load(complete_checkpoints(tiny_hopper_run)[-1] / "buffer.npz")
    dreamt = dream(model, buffer, DreamConfig(starts=1, size=64))
    dreams = root / "runs" / TASK / "fast-learner" / "seed0" / "dreams"
    dreamt.write(dreams / "by-command", ("mp4", "gif", "html"), {"during_training": False})
    for step in (100, 200):  # training-time dreams: only the last is shown
        paths = dreamt.write(dreams / f"step_{step:09d}", ("mp4",), {"during_training": True})
        summary = json.loads(paths["json"].read_text())
        paths["json"].write_text(json.dumps({**summary, "env_step": step}))
    write_report(ReportConfig(runs_dir=root / "runs", avalanche=(avalanche,),
                              guidance_lift=(lift,), reps=200))
    return root / "runs" / "report"


def test_the_report_shows_avalanche_guidance_lift_and_dreams(media_report: Path):
    text = (media_report / "REPORT.md").read_text()
    root = media_report.parent.parent
    assert (f"--avalanche {root / 'avalanche' / 'hopper-v5'} --guidance-lift "
            f"{root / 'guidance_lift' / 'hopper-v5'}`." in text)  # how it was made
    assert "![error vs horizon, hopper-v5](../../avalanche/hopper-v5/error_vs_horizon.png)" \
        in text
    assert "| model | h=1 | h=10 |" in text  # the avalanche's table
    lift = text[text.index("## Guidance lift"):]
    assert "### hopper-v5" in lift and "| sag | 1.750 |" in lift
    dreams = text[text.index("## Dreams"):]
    assert f"**{TASK}/fast-learner/seed0/dreams/by-command**: Hopper-v5 at env step 300" \
        in dreams
    assert f"](../{TASK}/fast-learner/seed0/dreams/by-command.gif)" in dreams
    assert "step_000000200" in dreams and "step_000000100" not in dreams
    assert "(training-time dream)" in dreams
    # a --dreams folder shows every dream below it
    folder = media_report.parent / TASK / "fast-learner" / "seed0" / "dreams"
    assert [path.name for path, _ in find_dreams([], (folder,))] == [
        "by-command.json", "step_000000100.json", "step_000000200.json"]


def test_report_html_is_the_report_with_every_figure_and_video_embedded(media_report: Path):
    page = (media_report / "report.html").read_text()
    text = (media_report / "REPORT.md").read_text()
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing outside the page
    # one HTML table per Markdown table (each has one separator line)
    assert page.count("<table>") == sum(line.startswith("|---") for line in text.splitlines())
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert [alt for alt, _ in images] == [TASK, "error vs horizon, hopper-v5"]
    assert base64.b64decode(images[0][1]) == (media_report / f"curves_{TASK}.png").read_bytes()
    videos = re.findall(r'<video [^>]*src="data:video/mp4;base64,([^"]+)"', page)
    dreams = media_report.parent / TASK / "fast-learner" / "seed0" / "dreams"
    assert [base64.b64decode(v) for v in videos] == [
        (dreams / "by-command.mp4").read_bytes(), (dreams / "step_000000200.mp4").read_bytes()]
    assert "<h2>Dreams</h2>" in page and "| sag |" not in page  # tables became HTML


def browser_or_skip() -> None:
    from agdrl_lab.browser import chromium_path

    pytest.importorskip("playwright", reason="the 'browser' extra (playwright) is not "
                                             "installed: pip install -e '.[dev]'")
    if chromium_path() is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run "
                    "installs it)")


def test_report_and_dream_pages_in_a_real_browser(media_report: Path, tmp_path: Path):
    browser_or_skip()
    from agdrl_lab.browser import check_page

    report = check_page(media_report / "report.html", tmp_path / "report.png")
    assert report.problems() == []
    assert report.tables == (media_report / "report.html").read_text().count("<table>") >= 6
    assert [alt for alt, loaded in report.images if loaded] == [
        TASK, "error vs horizon, hopper-v5"]
    assert len(report.videos) == 2 and all(advance > 0.2 for _, advance in report.videos)
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
    dream_page = media_report.parent / TASK / "fast-learner" / "seed0" / "dreams" / \
        "by-command.html"
    dream = check_page(dream_page)
    assert dream.problems() == [] and dream.tables == 1
    assert len(dream.videos) == 1 and dream.videos[0][1] > 0.2


def test_a_page_that_fails_in_the_browser_says_so(tmp_path: Path):
    browser_or_skip()
    from agdrl_lab.browser import check_page

    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img alt="missing" src="nowhere.png">'
                      "<script>undefinedFunction()</script></body></html>")
    problems = check_page(broken).problems()
    assert any("undefinedFunction" in p for p in problems)
    assert "image not loaded: missing" in problems
    assert any(p.startswith("request beyond the page: file://") for p in problems)
