"""Markdown tables of docs/validation.md from the committed validation JSON files.

    python docs/results/tables.py docs/results/validation_*.json

Besides the per-run tables it pools the checkpoints of all the given files, with the
correlation code of ``dse-tune validate`` itself (what one ``validate`` over a folder
holding all these runs would report).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dse_tune.evaluation.report import correlations

SCORES = ("dse_monitored", "dse", "dse_standardized", "dse_dim", "dse_class_relevance",
          "rankme_tokens", "rankme_pooled", "alpha_req_tokens", "alpha_req_pooled")


def fmt(value, digits=3):
    return "n/a" if value is None else f"{value:+.{digits}f}"


def main(paths: list[str]) -> None:
    reports = {Path(p).stem.removeprefix("validation_"): json.loads(Path(p).read_text()) for p in paths}
    names = list(reports)
    print("| score | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for score in SCORES:
        print(f"| {score} | " + " | ".join(fmt(r["kendall_tau"].get(score)) for r in reports.values()) + " |")
    print()
    rows = [row for report in reports.values() for row in report["checkpoints"]]
    pooled = correlations(rows, SCORES)
    print(f"| score | pooled tau ({len(rows)} checkpoints of {len(names)} runs) | pooled rho | mean tau over runs |")
    print("|---|---|---|---|")
    for score in SCORES:
        per_run = [r["kendall_tau"].get(score) for r in reports.values()]
        finite = [v for v in per_run if v is not None]
        mean = sum(finite) / len(finite) if finite else None
        print(f"| {score} | {fmt(pooled[score]['kendall_tau'])} | {fmt(pooled[score]['spearman'])} | {fmt(mean)} |")
    print()
    print("| run | mIoU range over checkpoints | selected (epoch, mIoU) | last (epoch, mIoU) | best (epoch, mIoU) | gain vs last |")
    print("|---|---|---|---|---|---|")
    for name, report in reports.items():
        s = report["selection"]
        mious = [row["miou"] for row in report["checkpoints"] if row.get("miou") is not None]
        print(
            f"| {name} | {min(mious):.4f} - {max(mious):.4f} | {s['selected']['epoch']}, {s['selected']['miou']:.4f} | "
            f"{s['last']['epoch']}, {s['last']['miou']:.4f} | {s['best']['epoch']}, {s['best']['miou']:.4f} | "
            f"{fmt(s['gain_vs_last'], 4)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
