"""Summarise a benchmarks/gpu/run.sh output folder against its goals: summary.json, summary.md.

    python benchmarks/gpu/summarize.py docs/results/gpu/NVIDIA-H200

Goals (issue 12; they apply to CUDA runs, a CPU smoke run reports them as "n/a (cpu)"):
DSE at (1024, 196, 384) under 50 ms; the regulariser every 4th step under 1.05x a step
without it (ViT-S/16 DINO, 224 px, bf16); CPU and device components agree.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

DSE_GOAL_SECONDS = 0.050
DSE_GOAL_SIZE = [1024, 196, 384]
OVERHEAD_GOAL = 1.05


def read_lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def verdict(ok: bool | None, on_gpu: bool) -> str:
    if not on_gpu:
        return "n/a (cpu)"
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def test_counts(path: Path) -> dict:
    if not path.is_file():
        return {}
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}


def summarize(out: Path) -> dict:
    environment = json.loads((out / "environment.json").read_text())
    on_gpu = environment["device"] == "cuda"
    timings = [r for r in read_lines(out / "bench_dse.jsonl") if "seconds" in r]
    paper = {tuple(r["size"]): r["seconds"] for r in timings if r["variant"] == "paper_per_position"}
    at_goal = paper.get(tuple(DSE_GOAL_SIZE))
    agreement = read_lines(out / "dse_agreement.jsonl")
    regularizer = read_lines(out / "bench_regularizer.jsonl")
    overhead = {r["dse_every_n_steps"]: r for r in regularizer if r.get("figure") == "dino_step_overhead"}
    every_4th = overhead.get(4, {}).get("ratio")
    real_path = out / "real_scale" / "run.json"
    real = json.loads(real_path.read_text()) if real_path.is_file() else {}
    return {
        "environment": environment,
        "steps": read_lines(out / "steps.jsonl"),
        "cuda_tests": test_counts(out / "cuda_tests.xml"),
        "dse_seconds": {"x".join(map(str, k)): v for k, v in paper.items()},
        "dse_goal": {"size": DSE_GOAL_SIZE, "seconds": DSE_GOAL_SECONDS, "measured": at_goal,
                     "verdict": verdict(None if at_goal is None else at_goal < DSE_GOAL_SECONDS, on_gpu)},
        "dse_agreement": [{"size": r["size"], "max_relative_difference": r["max_relative_difference"],
                           "agree": r["agree"]} for r in agreement],
        "regularizer_agreement": [r for r in regularizer if r.get("figure") == "regularizer_agreement"],
        "overhead": {every: r["ratio"] for every, r in overhead.items()},
        "overhead_goal": {"every_n_steps": 4, "ratio": OVERHEAD_GOAL, "measured": every_4th,
                          "verdict": verdict(None if every_4th is None else every_4th < OVERHEAD_GOAL, on_gpu)},
        "real_scale": {k: real.get(k) for k in ("train_seconds", "epochs_completed", "global_steps",
                                                 "steps_per_evaluation", "evaluations", "peak_dse", "validate")},
    }


def markdown(summary: dict) -> str:
    env = summary["environment"]
    lines = [
        f"# GPU proof: {env['device_name']} ({env['device']})", "",
        f"{env['date']}, commit {env['commit']}, torch {env['torch']} (CUDA {env['cuda']}), "
        f"lightning {env['lightning']}, timm {env['timm']}, lightly {env['lightly']}", "",
        "| step | exit | seconds |", "| --- | --- | --- |",
        *[f"| {s['step']} | {s['exit']} | {s['seconds']} |" for s in summary["steps"]], "",
        f"- CUDA tests: {summary['cuda_tests']}",
        f"- DSE seconds (paper's per-position M_dim): {summary['dse_seconds']}; goal < "
        f"{DSE_GOAL_SECONDS * 1000:.0f} ms at {DSE_GOAL_SIZE}: {summary['dse_goal']['verdict']}",
        f"- DSE components, CPU vs device: {summary['dse_agreement']}",
        f"- Regulariser value/gradient, CPU vs device: "
        f"{[(r['size'], r['value_relative_difference'], r['gradient_relative_difference']) for r in summary['regularizer_agreement']]}",
        f"- Step time with the regulariser / without, by dse_every_n_steps: {summary['overhead']}; goal < "
        f"{OVERHEAD_GOAL}x at every 4th: {summary['overhead_goal']['verdict']}",
        f"- Real-scale run: {summary['real_scale']}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py OUT_DIR")
    out = Path(sys.argv[1])
    summary = summarize(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
