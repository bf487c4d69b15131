"""Frontier plots of the guidance search: each variant's lift in the simulator (Δ replayed
return against unguided, with its 95% interval) against its dynamics error relative to
unguided, one marker per guide and form, one panel per sampler; and the table of every
variant with the criterion of docs/guidance.md (interval above 0, dynamics error at most 10%
above unguided).

    .venv/bin/python benchmarks/guidance_frontier.py results/guidance_lift/hopper-v5-run-* \\
        --out results/guidance_lift/frontier-hopper-v5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

MAX_ERROR_RATIO = 1.10
"""The criterion's bound on dynamics error relative to unguided."""


def family(variant: str) -> str:
    """A variant's guide and form without its dose: 'sag+first:total:1' -> 'sag+first:total'."""
    name, _, rest = variant.partition(":")
    mode = rest.partition(":")[0] or "sigma4"
    return f"{name}:{mode}" if name != "none" else "none"


def rows_of(results: dict) -> list[dict]:
    """One row per (sampler, variant) with the lift, its interval and the error ratio."""
    rows = []
    for sampler, variants in results["results"].items():
        base = variants["none"]["dynamics_error"]
        for variant, r in variants.items():
            lift = r["vs_none"]["replayed_return"]
            ratio = r["dynamics_error"] / base
            rows.append({"sampler": sampler, "variant": variant, "lift": lift["mean"],
                         "lo": lift["ci95"][0], "hi": lift["ci95"][1],
                         "delta_value": r["vs_none"]["mean_value"]["mean"],
                         "error_ratio": ratio, "seconds": r["seconds"],
                         "ess": r.get("imagination_resample_ess"),
                         "meets": variant != "none" and lift["ci95"][0] > 0
                         and ratio <= MAX_ERROR_RATIO})
    return rows


def plot(rows: list[dict], title: str, path: Path) -> None:
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    fig, axes = plt.subplots(1, len(samplers), figsize=(6.5 * len(samplers), 5), squeeze=False)
    families = sorted({family(r["variant"]) for r in rows} - {"none"})
    colors = {f: plt.cm.tab20(i % 20) for i, f in enumerate(families)}
    for ax, sampler in zip(axes[0], samplers, strict=True):
        for f in families:
            pts = [r for r in rows if r["sampler"] == sampler and family(r["variant"]) == f]
            if not pts:
                continue
            below = [p["lift"] - p["lo"] for p in pts]
            above = [p["hi"] - p["lift"] for p in pts]
            ax.errorbar([p["error_ratio"] for p in pts], [p["lift"] for p in pts],
                        yerr=[below, above],
                        fmt="o-" if "resample" not in f else "s--", color=colors[f], label=f,
                        capsize=2, ms=4, lw=0.8)
        ax.axhline(0, color="k", lw=0.6)
        ax.axvline(MAX_ERROR_RATIO, color="r", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set(title=f"{title} — {sampler}", xlabel="dynamics error / unguided",
               ylabel="Δ replayed return vs unguided (95% CI)")
    labels = {}  # one legend for every panel's lines
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(label, handle)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.legend(labels.values(), labels.keys(), fontsize=7, loc="center right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict]) -> str:
    lines = ["| sampler | variant | Δ replayed return [95% CI] | Δ V | dynamics error / unguided "
             "| ESS / N | s per batch | criterion |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ess = "" if r["ess"] is None else f"{r['ess']:.2f}"
        lines.append(f"| {r['sampler']} | {r['variant']} | {r['lift']:+.3f} [{r['lo']:+.3f}, "
                     f"{r['hi']:+.3f}] | {r['delta_value']:+.3f} | {r['error_ratio']:.3f} | "
                     f"{ess} | {r['seconds']:.2f} | {'met' if r['meets'] else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path,
                        help="guidance_lift.py output folders (results.json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    rows = [row for folder in args.folders
            for row in rows_of(json.loads((folder / "results.json").read_text()))]
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.title or args.out.name, args.out / "frontier.png")
    (args.out / "frontier.json").write_text(json.dumps(
        {"sources": [str(f) for f in args.folders], "rows": rows}, indent=1))
    (args.out / "FRONTIER.md").write_text(table(rows) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
