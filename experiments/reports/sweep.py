"""The context sweep's reports (``experiments.sweep``): each method's mean and spread over seeds, as tables
and plots.

``write_tables`` writes ``sweep.md`` (the paper's Table 5 shape, then per-trial returns and, on hidden-task
families, per-trial success rates), ``sweep.csv``, ``cells.json``, ``sweep.png`` (return against
trajectories in context) and ``trials.png`` (return against trial), each with the reference lines the
cells know (the oracle, the best policy in the data; the random floor is a cell of its own); ``compare``
lays one method of several finished sweeps side by side (an ablation table).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from experiments.run import RunDir

LABELS = {"dt": "DT", "bc10": "BC-10%", "oracle": "oracle (told the task)", "random": "random"}


IN_CONTEXT_LABELS = {"at": "AT", "ad": "AD", "dpt": "DPT"}


def label(method: str) -> str:
    """``at_k4`` -> "AT, k = 4"; baselines by name."""
    family, _, k = method.partition("_k")
    if k and family in IN_CONTEXT_LABELS:
        return f"{IN_CONTEXT_LABELS[family]}, k = {k}"
    return LABELS.get(method, method)


def in_context_family(method: str) -> str | None:
    """"at", "ad" or "dpt" for an in-context cell (``ad_k8``); None for a baseline."""
    family, _, k = method.partition("_k")
    return family if k and family in IN_CONTEXT_LABELS else None


def spread(mean: float, std: float | None, fmt: str = ".1f") -> str:
    """``"mean ± std"``, or the mean alone where there is no spread to show (``std`` None: one seed)."""
    return f"{mean:{fmt}}" if std is None else f"{mean:{fmt}} ± {std:{fmt}}"


def _std(entry: dict, value: float) -> float | None:
    """A std over seeds, None for one seed (it is 0 by construction, not a measured spread)."""
    return value if entry["seeds"] > 1 else None


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds for each method (per-trial curves included)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        entry = {"method": method, **{key: group[0][key] for key in ("trajectories", "trials", "batch_size",
                                                                      "context_steps")},
                 "seeds": len(group), "cpu_minutes": sum(r["cpu_s"] for r in group) / 60,
                 "wall_minutes": sum(r["wall_s"] for r in group) / 60}
        for key in ("first_trial_mean_return", "last_trial_mean_return", "best_of_n_mean_return"):
            values = np.array([r[key] for r in group])
            entry[key] = float(values.mean())
            entry[key.replace("mean_return", "std")] = float(values.std())
        curves = np.array([r["per_trial_mean_return"] for r in group])
        entry["per_trial_mean"], entry["per_trial_std"] = curves.mean(0).tolist(), curves.std(0).tolist()
        if all(r.get("per_trial_success_rate") for r in group):
            success = np.array([r["per_trial_success_rate"] for r in group])
            entry["per_trial_success_mean"] = success.mean(0).tolist()
            entry["per_trial_success_std"] = success.std(0).tolist()
        out.append(entry)
    return out


def references(rows: list[dict]) -> dict[str, float]:
    """The lines every result is read against, where the cells know them: the oracle's return on the
    evaluated tasks (exact) and the best policy in the data (``experiments.run.best_policy_return``; read
    from an in-context cell, whose data is the whole dataset), by label."""
    lines = {}
    oracle = [r["oracle_return"] for r in rows if r.get("oracle_return") is not None]
    if oracle:
        lines["oracle (exact)"] = float(np.mean(oracle))
    best = [r["dataset_best_policy_return"] for r in sorted(rows, key=lambda r: not in_context_family(r["method"]))
            if r.get("dataset_best_policy_return") is not None]
    if best:
        lines["best policy in the data"] = best[0]
    return lines


def markdown(rows: list[dict]) -> str:
    summary = aggregate(rows)
    first = rows[0]
    digits = 1 if first["dataset_max_return"] >= 100 else 2  # cartpole's hundreds; point_nav's units
    lines_at = "".join(f" {name[0].upper()}{name[1:]}: {value:.{digits}f}." for name, value in references(rows).items())
    lines = [f"Dataset: median return {first['dataset_median_return']:.1f}, best {first['dataset_max_return']:.1f}."
             f"{lines_at} Mean ± standard deviation over seeds of each seed's mean over the evaluation environments. "
             "Last trial: the return of the final trial. Best of n: each environment's best trial, n = trials. "
             "DT, BC-10%, oracle and random trials are independent (empty context each time).", "",
             "| method | trajectories in context | steps per batch | seeds | trials (n) | first trial | last trial "
             "| best of n | CPU min |", "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        trained = e["method"] != "random"  # the floor reads no context and trains on nothing
        context = f"{e['trajectories']} | {e['batch_size']} x {e['context_steps']}" if trained else "none | none"
        lines.append(f"| {label(e['method'])} | {context} | {e['seeds']} | {e['trials']} | "
                     + " | ".join(spread(e[f"{key}_mean_return"], _std(e, e[f"{key}_std"]), f".{digits}f")
                                  for key in ("first_trial", "last_trial", "best_of_n"))
                     + f" | {e['cpu_minutes']:.1f} |")
    per_trial = digits - 1
    lines += _per_trial(summary, "Per-trial mean return (AT conditions each trial on the earlier ones):",
                        "per_trial_mean", "per_trial_std", lambda m, s: spread(m, s, f".{per_trial}f"))
    if all("per_trial_success_mean" in e for e in summary):
        lines += _per_trial(summary, "Per-trial success rate, % (a step rewarded at least envs.SUCCESS_REWARD):",
                            "per_trial_success_mean", "per_trial_success_std",
                            lambda m, s: spread(100 * m, None if s is None else 100 * s, ".0f"))
    total_cpu = sum(r["cpu_s"] for r in rows) / 60
    total_wall = sum(r["wall_s"] for r in rows) / 60
    lines += ["", f"{len(rows)} cells; {total_cpu:.0f} CPU minutes, {total_wall:.0f} wall minutes in all."]
    return "\n".join(lines) + "\n"


def _per_trial(summary: list[dict], title: str, mean_key: str, std_key: str, cell) -> list[str]:
    most = max(len(e[mean_key]) for e in summary)
    lines = ["", title, "", "| method | " + " | ".join(f"trial {i + 1}" for i in range(most)) + " |",
             "|---|" + "---|" * most]
    for e in summary:
        cells = [cell(m, _std(e, s)) for m, s in zip(e[mean_key], e[std_key])]
        lines.append(f"| {label(e['method'])} | " + " | ".join(cells + [""] * (most - len(cells))) + " |")
    return lines


def write_tables(root: RunDir, rows: list[dict]) -> None:
    summary = aggregate(rows)
    buffer = io.StringIO()
    fields = [k for k in summary[0] if not k.startswith("per_trial")]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(summary)
    root.write_text("sweep.csv", buffer.getvalue())
    root.write_json("cells.json", rows)
    root.write_text("sweep.md", markdown(rows))
    _plot(root, summary, rows)


def _plot(root: RunDir, summary: list[dict], rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = [e for e in summary if in_context_family(e["method"])]
    baselines = [e for e in summary if not in_context_family(e["method"])]
    reference_lines = references(rows)

    def save(fig, ax, xlabel: str, name: str) -> None:
        for (text, value), style in zip(reference_lines.items(), REFERENCE_STYLES):
            ax.axhline(value, label=text, **style)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return")
        ax.legend(fontsize=7)
        fig.tight_layout()
        root.write(name, lambda path: fig.savefig(path, dpi=120, format="png"))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for family in dict.fromkeys(in_context_family(e["method"]) for e in at):
        group = [e for e in at if in_context_family(e["method"]) == family]
        ks = [e["trajectories"] for e in group]
        name = IN_CONTEXT_LABELS[family]
        for key, text in (("last_trial", f"{name}, last trial"), ("best_of_n", f"{name}, best of n")):
            ax.errorbar(ks, [e[f"{key}_mean_return"] for e in group], yerr=[e[f"{key}_std"] for e in group],
                        marker="o", capsize=3, label=text)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
    for e, color in zip(baselines, ("tab:red", "tab:gray", "tab:green", "tab:brown")):
        mean, std = e["last_trial_mean_return"], e["last_trial_std"]
        ax.axhline(mean, linestyle="--", color=color, label=f"{label(e['method'])} (one trial)")
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.15)
    save(fig, ax, "trajectories in context", "sweep.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    curves = at + baselines
    for i, e in enumerate(curves):
        # Curves that coincide (AT with k = 1 and DT) stay visible: each its own marker and dash, shifted a little.
        trials = np.arange(1, len(e["per_trial_mean"]) + 1) + TRIAL_OFFSET * (i - (len(curves) - 1) / 2)
        ax.errorbar(trials, e["per_trial_mean"], yerr=e["per_trial_std"] if e["seeds"] > 1 else None,
                    marker=MARKERS[i % len(MARKERS)], markerfacecolor="none" if i % 2 else None, capsize=2,
                    linestyle=(LINESTYLES if e in at else (":",))[i % (len(LINESTYLES) if e in at else 1)],
                    label=label(e["method"]))
    save(fig, ax, "trial", "trials.png")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
REFERENCE_STYLES = (dict(color="tab:green", linestyle="-.", linewidth=1.2),  # oracle
                    dict(color="tab:olive", linestyle=(0, (2, 2)), linewidth=1.2))  # best policy in the data
LINESTYLES = ("-", "--", "-.", (0, (5, 1, 1, 1)))
TRIAL_OFFSET = 0.06  # trials between neighbouring curves' points


def compare(roots: list[Path], methods: list[str]) -> str:
    """One method across several finished sweeps (an ablation table): its first-trial, last-trial and
    best-of-n returns (mean ± std over seeds) in each."""
    lines = ["| sweep | method | seeds | trials (n) | first trial | last trial | best of n | CPU min |",
             "|---|---|---|---|---|---|---|---|"]
    for root in roots:
        cells = json.loads((Path(root) / "cells.json").read_text())
        for entry in aggregate(cells):
            if entry["method"] not in methods:
                continue
            stats = " | ".join(spread(entry[f"{key}_mean_return"], _std(entry, entry[f"{key}_std"]))
                               for key in ("first_trial", "last_trial", "best_of_n"))
            lines.append(f"| {Path(root).name} | {label(entry['method'])} | {entry['seeds']} | {entry['trials']} | "
                         f"{stats} | {entry['cpu_minutes']:.1f} |")
    return "\n".join(lines) + "\n"
