"""The simulation report: Markdown text, PNG charts (matplotlib) and a JSON copy of the figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

from simulator.analysis import Report


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _pp(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f} pp"


def markdown(report: Report, charts: list[str] | None = None) -> str:
    r = report
    lines = [
        f"# Simulation report: {r.leads} leads, {r.days} days, seed {r.seed}",
        "",
        f"Holdout {r.holdout_percent:g}% of at-risk leads; ran in {r.runtime_seconds:.1f} s "
        f"({r.volumes['ticks']} hourly ticks, {r.volumes['tasks_run']} tasks, "
        f"{r.volumes['tasks_failed']} failed).",
        "",
        "## Model",
        "",
        f"- scorer: `{r.model['version']}` ({r.model['algorithm']})",
        f"- AUC of the final risk score against the world's hidden dormancy: "
        f"{r.model['auc_vs_hidden_dormancy']:.3f} over {r.model['scored_leads']} active leads "
        f"({_pct(r.model['dormant_share'])} dormant)",
    ]
    for name, value in sorted((r.model.get("recorded_metrics") or {}).items()):
        if isinstance(value, int | float):
            lines.append(f"- recorded {name}: {value:.3f}")
    lines += [
        "",
        "## Stage success: treated vs holdout, measured vs the world's truth",
        "",
        "Success = re-engaged or converted in the stage's window. *True* rates are the world's "
        "exact expected rates for the same interventions (its own dynamics, no sampling); "
        "*z* is (measured - true) in standard errors.",
        "",
        "| stage | target | treated n | treated | 95% CI | true | z | holdout n | holdout "
        "| true | z | lift | 95% CI | true lift | covered |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage, s in r.stages.items():
        t, h = s.treated, s.holdout
        lo, hi = t.interval
        d, dlo, dhi = s.lift
        lines.append(
            f"| {stage} | {_pct(s.target)} | {t.n} | {_pct(t.rate)} | {_pct(lo)}-{_pct(hi)} "
            f"| {_pct(t.true_rate)} | {t.z:+.2f} | {h.n} | {_pct(h.rate)} | {_pct(h.true_rate)} "
            f"| {h.z:+.2f} | {_pp(d)} | {_pp(dlo)} .. {_pp(dhi)} | {_pp(s.true_lift)} "
            f"| {'yes' if s.covers else 'NO'} |"
        )
    truncated = sum(s.truncated for s in r.stages.values())
    if truncated:
        lines += [
            "",
            f"{truncated} interventions ended before their window (the risk rose to the next "
            "stage, or the lead opted out); they are judged on the span they ran. Their truth "
            "is approximate: a success ends an intervention before any rise could, so a "
            "successful one is credited its full window.",
        ]
    c = r.churn
    lines += [
        "",
        "## Churn: treated vs holdout (per lead, lost by the end)",
        "",
        "| arm | leads | churned | rate | 95% CI | lost in the world |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ("treated", "holdout"):
        a = c[arm]
        lines.append(
            f"| {arm} | {a['n']} | {a['churned']} | {_pct(a['rate'])} | "
            f"{_pct(a['low'])}-{_pct(a['high'])} | {a['world_lost']} |"
        )
    diff = c["difference"]
    lines += [
        "",
        f"Difference treated - holdout: {_pp(diff['value'])} "
        f"(95% CI {_pp(diff['low'])} .. {_pp(diff['high'])}).",
        "",
        "## Revenue protected and ROI",
        "",
        f"- value of a kept lead: {r.money['saved_lead_value']:,.2f}",
        f"- extra saves (lift x treated, summed over stages): measured "
        f"{r.money['measured_saves']:.1f}, true {r.money['true_saves']:.1f}",
        f"- revenue protected: measured {r.money['revenue_protected']:,.0f}, true "
        f"{r.money['true_revenue_protected']:,.0f}",
        f"- cost of sends and agent time: {r.money['cost']:,.2f} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(r.money['messages_sent'].items()))})",
        f"- ROI: measured {r.money['roi']:.1f}x, true {r.money['true_roi']:.1f}x",
        "",
        "## Volumes",
        "",
    ]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in r.volumes.items()]
    if r.stops_counted_as_success:
        lines += [
            "",
            f"Note: {r.stops_counted_as_success} interventions were counted re-engaged in a "
            "window whose only answer may have been STOP.",
        ]
    if r.tracking:
        lines += [
            "",
            "## tracking's impact service",
            "",
            "```",
            json.dumps(r.tracking, indent=2, default=str),
            "```",
        ]
    if r.errors:
        lines += ["", "## Refusals and failures", ""] + [f"- `{e}`" for e in r.errors[:20]]
    if charts:
        lines += ["", "## Charts", ""] + [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    return "\n".join(lines) + "\n"


def charts_write(report: Report, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    stages = list(report.stages.values())
    if stages:
        fig, ax = plt.subplots(figsize=(7, 4))
        x = range(len(stages))
        for offset, arm, color in ((-0.18, "treated", "tab:blue"), (0.18, "holdout", "tab:gray")):
            rates, errs, truths = [], [[], []], []
            for s in stages:
                a = getattr(s, arm)
                lo, hi = a.interval
                rates.append(a.rate)
                errs[0].append(max(0, a.rate - lo) if a.n else 0)
                errs[1].append(max(0, hi - a.rate) if a.n else 0)
                truths.append(a.true_rate)
            xs = [i + offset for i in x]
            ax.bar(xs, rates, width=0.34, color=color, label=f"{arm} (measured, 95% CI)", yerr=errs)
            ax.scatter(xs, truths, color="black", marker="_", s=400, zorder=3)
        ax.scatter([], [], color="black", marker="_", s=100, label="world's true rate")
        for i, s in enumerate(stages):
            ax.hlines(s.target, i - 0.4, i + 0.4, colors="tab:red", linestyles="dashed")
        ax.plot([], [], "r--", label="target")
        ax.set_xticks(list(x), [f"stage {s.stage}" for s in stages])
        ax.set_ylabel("success rate")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title("Stage success: treated vs holdout")
        path = out / "stage_success.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))

        fig, ax = plt.subplots(figsize=(7, 4))
        for i, s in enumerate(stages):
            d, lo, hi = s.lift
            if not math.isnan(d):
                ax.errorbar(i, d, yerr=[[d - lo], [hi - d]], fmt="o", color="tab:blue", capsize=6)
            ax.scatter(i, s.true_lift, color="tab:red", marker="x", s=80, zorder=3)
        ax.errorbar([], [], yerr=[], fmt="o", color="tab:blue", label="measured lift, 95% CI")
        ax.scatter([], [], color="tab:red", marker="x", label="world's true lift")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(stages)), [f"stage {s.stage}" for s in stages])
        ax.set_ylabel("treated - holdout success")
        ax.legend(fontsize=8)
        ax.set_title("Measured lift next to the true lift")
        path = out / "lift.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))

    fig, ax = plt.subplots(figsize=(5, 4))
    arms = [report.churn["treated"], report.churn["holdout"]]
    rates = [a["rate"] if a["n"] else 0 for a in arms]
    errs = [
        [max(0, a["rate"] - a["low"]) if a["n"] else 0 for a in arms],
        [max(0, a["high"] - a["rate"]) if a["n"] else 0 for a in arms],
    ]
    ax.bar(["treated", "holdout"], rates, yerr=errs, color=["tab:blue", "tab:gray"], capsize=6)
    ax.set_ylabel("churned by the end (95% CI)")
    ax.set_title("Churn per lead")
    path = out / "churn.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(str(path))
    return paths


def report_write(report: Report, out: str | Path) -> Path:
    """Write report.md, its charts and report.json into `out`; returns the Markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    charts = charts_write(report, out)
    path = out / "report.md"
    path.write_text(markdown(report, charts))
    (out / "report.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
    return path
