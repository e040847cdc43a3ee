"""Readers of a finished sweep's files, shared by the Ray tests."""

from __future__ import annotations

import json
from pathlib import Path

from dse_tune.runs import HISTORY_FILE


def tune_results(sweep_dir: Path) -> dict[str, list[dict]]:
    """Every trial's reported results (Tune's result.json), by trial id."""
    results = {}
    for path in sweep_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results[rows[0]["trial_id"]] = rows
    return results


def history(run_dir: Path) -> dict:
    return json.loads((run_dir / HISTORY_FILE).read_text())
