"""The report of an RL run: `report.json`, `report.md` and `rl.png` in the checkpoint directory.

The plot has four panels over steps: the reward (total and per reward function), the KL to the SFT
reference, the completions' mean length, and held-out exact match with its 95% Wilson interval. Reward
hacking shows as the first panel rising while the last falls; the guard's warnings are marked on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config_flags import to_jsonable
from trainer.checkpoint import write_json_atomic


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(e: dict[str, Any]) -> str:
    lo, hi = e["ci95"]
    return f"{_pct(e['exact_match'])} [{_pct(lo)}, {_pct(hi)}] ({e['correct']}/{e['n']})"


def _verdict(lo: float, hi: float) -> str:
    return "significant" if lo > 0 or hi < 0 else "not significant"


def paired_diff(a: str, b: str, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Exact match of `b` minus `a` on the same items (per-item hit strings), with a 95% paired bootstrap
    interval: the items are resampled, each keeping both of its outcomes."""
    import random

    x = [int(j) - int(i) for i, j in zip(a, b, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(x, k=len(x))) / len(x) for _ in range(resamples))
    return sum(x) / len(x), means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def plot(path: Path, rows: list[dict[str, Any]], names: list[str], state: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(8, 10), sharex=True)
    ax = axes[0]
    ax.plot(steps, [r["reward"] for r in rows], label="reward (weighted sum)", color="black")
    for n in names:
        ax.plot(steps, [r["rewards"].get(n) for r in rows], label=n, alpha=0.7)
    ax.set_ylabel("reward")
    ax.legend(fontsize=7, loc="best")
    for ax, key, label in ((axes[1], "kl", "KL to SFT"), (axes[2], "completion_length", "length (tokens)")):
        ax.plot(steps, [float("nan") if r.get(key) is None else r[key] for r in rows])
        ax.set_ylabel(label)
    ax = axes[3]
    evals = state["evals"]
    em = [e["exact_match"] for e in evals]
    lo = [e["exact_match"] - e["ci95"][0] for e in evals]
    hi = [e["ci95"][1] - e["exact_match"] for e in evals]
    ax.errorbar([e["step"] for e in evals], em, yerr=[lo, hi], marker="o", capsize=3)
    for w in state["warnings"]:
        ax.axvline(w["step"], color="red", linestyle="--", alpha=0.6)
    if state.get("best_step") is not None:
        ax.axvline(state["best_step"], color="green", linestyle=":", label="kept (best)")
        ax.legend(fontsize=7)
    ax.set_ylabel("held-out EM")
    ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(summary: dict[str, Any]) -> str:
    m, evals, state = summary["metrics"], summary["evals"], summary["guard"]
    best = next(e for e in evals if e["step"] == state["best_step"])
    lines = [
        f"# RL run {summary['tag']} ({summary['method']})",
        "",
        f"From `{summary['parent']}`, {m['steps']} steps ({m['steps_per_s']:.3f} steps/s with the "
        f"evaluations, {m.get('step_seconds_mean', 0):.1f} s per step without), rewards: "
        + ", ".join(f"{n} x{w:g}" for n, w in summary["rewards"].items())
        + ".",
        "",
        "## Held-out (validation) exact match (95% Wilson interval)",
        "",
        "| | step | exact match |",
        "|---|---|---|",
        f"| before (SFT) | 0 | {_ci(evals[0])} |",
        f"| after (last step) | {evals[-1]['step']} | {_ci(evals[-1])} |",
        f"| kept (best) | {best['step']} | {_ci(best)} |",
        "",
    ]
    for name, e in (("last step", evals[-1]), ("kept step", best)):
        d, lo, hi = paired_diff(evals[0]["hits"], e["hits"])
        disjoint = e["ci95"][0] > evals[0]["ci95"][1] or e["ci95"][1] < evals[0]["ci95"][0]
        lines.append(
            f"- {name} vs. SFT: {100 * d:+.1f} points, paired bootstrap 95% CI "
            f"[{100 * lo:+.1f}, {100 * hi:+.1f}] ({_verdict(lo, hi)}); Wilson intervals "
            f"{'disjoint' if disjoint else 'overlap'}"
        )
    lines.append("")
    if "test_diff" in m:  # the paired difference trainer.rl_guard.summarise_test put in the metrics
        before, kept = state["test"]["before"], state["test"]["kept"]
        d, (lo, hi) = m["test_diff"], m["test_diff_ci95"]
        lines += [
            "## Test set (never used to choose the step)",
            "",
            "The kept step is the best of several on the rows above, so its gain there is biased upward; "
            "these rows were answered only by the SFT model and the kept weights.",
            "",
            "| | exact match |",
            "|---|---|",
            f"| SFT | {_ci(before)} |",
            f"| kept (step {state['best_step']}) | {_ci(kept)} |",
            "",
            f"- kept step vs. SFT: {100 * d:+.1f} points, paired bootstrap 95% CI [{100 * lo:+.1f}, "
            f"{100 * hi:+.1f}] ({_verdict(lo, hi)})",
            "",
        ]
    if "kl_last" in m:
        lines += [f"KL to the SFT reference: last {m['kl_last']:.4f}, max {m['kl_max']:.4f}.", ""]
    if "reward_first" in m:
        lines += [f"Reward: first step {m['reward_first']:.3f}, last step {m['reward_last']:.3f}.", ""]
    lines += ["## Reward-hacking guard", ""]
    if state["warnings"]:
        lines.append(f"**{len(state['warnings'])} warning(s)** (threshold {summary['guard_threshold']:g}):")
        lines.append("")
        for w in state["warnings"]:
            lines.append(
                f"- step {w['step']}: reward {w['reward']:.3f} > {w['reward_at_best']:.3f} at step "
                f"{w['best_step']}, held-out EM {_pct(w['heldout_em'])} fell {100 * w['drop']:.1f} points "
                f"below its best {_pct(w['best_em'])}"
            )
    else:
        lines.append(
            f"No warning: held-out EM never fell more than {summary['guard_threshold']:g} below its "
            "best while the reward rose."
        )
    lines += [
        "",
        f"The checkpoint holds the weights of step {state['best_step']} (best held-out EM; ties: later).",
        "",
    ]
    lines += [
        "## Held-out evaluations",
        "",
        "| step | mean reward since last | exact match | citation accuracy |",
        "|---|---|---|---|",
    ]
    for e in evals:
        reward = "-" if e.get("reward") is None else f"{e['reward']:.3f}"
        cite = _pct(e["citation_accuracy"]) if "citation_accuracy" in e else "-"
        lines.append(f"| {e['step']} | {reward} | {_ci(e)} | {cite} |")
    lines += ["", "![reward, KL, length and held-out EM over steps](rl.png)", ""]
    return "\n".join(lines)


def write_report(
    out: Path,
    cfg: Any,
    tag: str,
    parent: Path,
    names: list[str],
    weights: list[float] | None,
    rows: list[dict[str, Any]],
    state: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, str]:
    summary = {
        "tag": tag,
        "method": cfg.method,
        "parent": str(parent),
        "rewards": dict(zip(names, weights or [1.0] * len(names), strict=True)),
        "guard_threshold": cfg.guard_threshold,
        "metrics": metrics,
        "evals": state["evals"],
        "guard": state,
        "config": to_jsonable(cfg),
    }
    write_json_atomic(out / "report.json", summary)
    (out / "report.md").write_text(markdown(summary), encoding="utf-8")
    plot(out / "rl.png", rows, names, state)
    return {name: str(out / name) for name in ("report.md", "report.json", "rl.png", "metrics.jsonl")}
