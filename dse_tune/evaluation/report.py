"""The validation report: how well each label-free score ranks checkpoints like the
linear probe's mIoU, and what the label-free selection buys.

Pure functions over the checkpoint rows of :func:`dse_tune.evaluation.validate.validate`;
no torch or scipy at import.

Example:
    >>> rows = [{"index": i, "epoch": i, "miou": m, "dse": d}
    ...         for i, (m, d) in enumerate([(0.2, 1.0), (0.4, 2.0), (0.3, 1.5)])]
    >>> correlations(rows, scores=("dse",))["dse"]["kendall_tau"]
    1.0
    >>> summary = selection_summary([1.0, 2.0, 1.5], rows, window=1, top=1)
    >>> summary["selected"]["epoch"], summary["best"]["miou"], round(summary["gain_vs_last"], 2)
    (1, 0.4, 0.1)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.degradation import finite_or_none, peak
from dse_tune.runs import COMPONENTS, RunRecord
from dse_tune.selection import select_run

__all__ = [
    "MIN_CHECKPOINTS",
    "SCORE_NAMES",
    "aggregate_selection",
    "build_report",
    "correlations",
    "reliability_warnings",
    "json_ready",
    "run_summary",
    "selection_summary",
    "standardize_rows",
]

#: Label-free scores compared with the linear probe's mIoU (higher-is-better or not,
#: tau keeps the sign: the intra-cluster terms and alpha-ReQ are expected to correlate
#: negatively).
SCORE_NAMES = (
    "dse",
    "dse_standardized",
    "dse_monitored",
    "dse_monitored_standardized",
    "dse_class_relevance",
    "dse_inter",
    "dse_intra_image",
    "dse_intra_batch",
    "dse_dim",
    "rankme_tokens",
    "rankme_pooled",
    "alpha_req_tokens",
    "alpha_req_pooled",
)

#: Fewer checkpoints than this in a run: its tau and rho are flagged as unreliable (over
#: 4 checkpoints, tau takes only 7 values and p < 0.05 needs a perfect ranking).
MIN_CHECKPOINTS = 8


def json_ready(value: Any) -> Any:
    """``value`` with non-finite floats as None and tuples as lists (for ``allow_nan=False``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _tau_and_rho(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Kendall's tau-b and Spearman's rho with p-values; None when undefined (fewer than
    2 pairs, or a constant series)."""
    from scipy import stats

    undefined = {"kendall_tau": None, "kendall_p": None, "spearman": None, "spearman_p": None}
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = stats.kendalltau(x, y)
        rho = stats.spearmanr(x, y)
    return {
        "kendall_tau": finite_or_none(tau.statistic),
        "kendall_p": finite_or_none(tau.pvalue),
        "spearman": finite_or_none(rho.statistic),
        "spearman_p": finite_or_none(rho.pvalue),
    }


def correlations(rows: Sequence[Mapping[str, Any]], scores: Sequence[str] = SCORE_NAMES, target: str = "miou") -> dict[str, dict[str, Any]]:
    """Per score: Kendall's tau, Spearman's rho (with p-values) and the number of
    checkpoints ``n`` over the rows where both the score and ``target`` are finite."""
    table = {}
    for name in scores:
        pairs = [(finite_or_none(r.get(name)), finite_or_none(r.get(target))) for r in rows]
        pairs = [(s, t) for s, t in pairs if s is not None and t is not None]
        table[name] = {**_tau_and_rho([s for s, _ in pairs], [t for _, t in pairs]), "n": len(pairs)}
    return table


def _by_statistic(table: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"kendall_tau": {score: value}, "kendall_p": ..., "spearman": ..., "spearman_p": ...}``."""
    statistics = ("kendall_tau", "kendall_p", "spearman", "spearman_p")
    return {statistic: {name: v[statistic] for name, v in table.items()} for statistic in statistics}


def _point(row: Mapping[str, Any] | None) -> dict[str, Any]:
    if row is None:
        return {"epoch": None, "index": None, "miou": None, "dse_monitored": None}
    return {
        "epoch": row.get("epoch"),
        "index": row.get("index"),
        "miou": finite_or_none(row.get("miou")),
        "dse_monitored": finite_or_none(row.get("dse_monitored")),
    }


def _best_miou(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The row with the highest mIoU (first of ties), None when no row has one."""
    found = peak([finite_or_none(r.get("miou")) for r in rows])
    return None if found.index is None else rows[found.index]


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def selection_summary(
    monitored: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
) -> dict[str, Any]:
    """The selector's choice against the last and the best (oracle) checkpoint of one run.

    Args:
        monitored: the run (a :class:`~dse_tune.runs.RunRecord`: its monitored DSE, noise,
            first step and ranking verdict), or its bare DSE history.
        rows: one row per evaluation (same order) with ``epoch``, ``index`` and
            ``miou`` (None where the linear probe could not score the checkpoint).

    Returns:
        ``{"selected", "last", "best", "best_candidate", "candidates", "gain_vs_last",
        "gap_to_best", "reliability", "reliability_reason"}``: ``selected`` is what
        :func:`dse_tune.selection.select_run` chooses (what ``dse-tune select`` gives);
        ``last`` the last checkpoint with an mIoU; ``best`` the highest mIoU;
        ``best_candidate`` the highest mIoU among the candidates.
    """
    run = monitored if isinstance(monitored, RunRecord) else RunRecord.from_values("run", monitored)
    chosen = select_run(run, window, top)
    candidates = chosen.candidates
    with_miou = [r for r in rows if finite_or_none(r.get("miou")) is not None]
    candidate_rows = [rows[i] for i in candidates]
    selected = _point(rows[chosen.chosen] if chosen.chosen is not None else None)
    last = _point(with_miou[-1] if with_miou else None)
    best = _point(_best_miou(rows))
    return {
        "selected": selected,
        "last": last,
        "best": best,
        "best_candidate": _point(_best_miou(candidate_rows)),
        "candidates": [_point(r) for r in candidate_rows],
        "gain_vs_last": _difference(selected["miou"], last["miou"]),
        "gap_to_best": _difference(best["miou"], selected["miou"]),
        "window": window,
        "top": top,
        "reliability": chosen.verdict,
        "reliability_reason": chosen.reliability,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def aggregate_selection(per_run: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A sweep's selection: per-run selections averaged over the runs that have one."""
    if len(per_run) == 1:
        return next(iter(per_run.values()))["selection"]
    selections = [r["selection"] for r in per_run.values() if r["selection"]["selected"]["miou"] is not None]

    def mean_of(key: str) -> dict[str, Any]:
        return {"epoch": None, "index": None, "miou": _mean([s[key]["miou"] for s in selections])}

    return {
        "selected": mean_of("selected"),
        "last": mean_of("last"),
        "best": mean_of("best"),
        "best_candidate": mean_of("best_candidate"),
        "gain_vs_last": _mean([s["gain_vs_last"] for s in selections]),
        "gap_to_best": _mean([s["gap_to_best"] for s in selections]),
        "gain_vs_random_init": _mean([s.get("gain_vs_random_init") for s in selections]),
        "aggregate": f"mean over the {len(selections)} run(s) with a selected checkpoint scored by the linear probe",
        "reliability": {name: r["selection"].get("reliability") for name, r in per_run.items()},
    }


def standardize_rows(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Fill ``dse_standardized`` and ``dse_monitored_standardized`` of the rows whose four
    components are finite (:func:`dse_tune.metrics.standardize_dse` over the run's
    series); returns the scales used, per filled field."""
    from dse_tune.metrics import standardize_dse

    scales = {}
    for prefix, target in (("dse_", "dse_standardized"), ("dse_monitored_", "dse_monitored_standardized")):
        complete = [r for r in rows if all(finite_or_none(r.get(prefix + c)) is not None for c in COMPONENTS)]
        if complete:
            series = standardize_dse([{c: r[prefix + c] for c in COMPONENTS} for r in complete])
            for r, value in zip(complete, series.standardized):
                r[target] = value
            scales[target] = {"class_relevance_std": series.class_relevance_std, "dim_std": series.dim_std}
    return scales


def run_summary(
    run: Any,
    rows: list[dict[str, Any]],
    *,
    dse_seed: int,
    window: int,
    top: int | None,
    baseline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One run's entry of ``per_run``: standardised DSE, the selection (its candidates and
    selected checkpoint are also marked on ``rows``), the correlations with their
    p-values, and, given the random-init ``baseline`` (``{"miou": ...}``), each
    checkpoint's ``gain_vs_random_init`` (also on ``rows``)."""
    standardization = standardize_rows(rows)
    selection = selection_summary(run, rows, window=window, top=top)
    candidates = {c["index"] for c in selection["candidates"]}
    baseline_miou = finite_or_none((baseline or {}).get("miou"))
    for r in rows:
        r["candidate"] = r["index"] in candidates
        r["selected"] = r["index"] == selection["selected"]["index"]
        r["gain_vs_random_init"] = _difference(finite_or_none(r.get("miou")), baseline_miou)
    selection["gain_vs_random_init"] = _difference(selection["selected"]["miou"], baseline_miou)
    table = correlations(rows)
    probed = sum(1 for r in rows if finite_or_none(r.get("miou")) is not None)
    return {
        "path": str(run.path) if run.path is not None else None,
        "beta": run.beta,
        "evaluations": len(rows),
        # "probed": the checkpoints the linear probe scored (key kept for existing reports).
        "probed": probed,
        "dse_seed": dse_seed,
        "random_init": dict(baseline) if baseline is not None else None,
        **_by_statistic(table),
        "correlations": table,
        "standardization": standardization,
        "selection": selection,
    }


def reliability_warnings(per_run: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Warnings about what the numbers can say: runs with fewer than
    :data:`MIN_CHECKPOINTS` scored checkpoints, and missing random-init baselines.

    Example:
        >>> reliability_warnings({"a": {"probed": 4, "random_init": {"miou": 0.3}}})[0][:49]
        'run a: tau and rho over 4 checkpoints (fewer than'
    """
    warnings_list = []
    for name, summary in per_run.items():
        if summary["probed"] < MIN_CHECKPOINTS:
            warnings_list.append(
                f"run {name}: tau and rho over {summary['probed']} checkpoints (fewer than {MIN_CHECKPOINTS}) "
                "are weak evidence; read the p-values, and evaluate more often for a real test"
            )
        baseline = summary.get("random_init")
        if baseline is not None and baseline.get("problem"):
            warnings_list.append(f"run {name}: no random-init baseline: {baseline['problem']}")
    return warnings_list


def _protocol(linear_probe_kwargs: Mapping[str, Any] | None, window: int, top: int | None) -> dict[str, Any]:
    from dse_tune.evaluation.linear_probe import DEFAULT_STEPS, DEFAULT_WEIGHT_DECAY

    settings = dict(linear_probe_kwargs or {})
    optimizer = settings.get("optimizer", "lbfgs")
    return {
        # "probe": the linear probe's protocol (key kept for existing reports).
        "probe": {
            "optimizer": optimizer,
            "steps": settings.get("steps", DEFAULT_STEPS[optimizer]),
            "weight_decay": settings.get("weight_decay", DEFAULT_WEIGHT_DECAY),
            **settings,
            "standardization": "per channel, train-token statistics",
            "upsampling": "bilinear, align_corners=False, to the mask resolution",
            "ignore_index": 255,
            "miou": "confusion matrix over all evaluated pixels; mean IoU over classes with a non-empty union",
        },
        "dse": "dse_tune.dse with default settings and seed = the run's probe_seed, on the evaluation "
        "images (whole groups of 8)",
        "pooled_embeddings": "mean of the patch tokens per image",
        "selection": f"select_run(run, window={window}, top={top}): the checkpoint dse-tune select chooses "
        "(noise-aware; the latest when the ranking is not reliable)",
        "pooled_correlations": "all checkpoints of all runs pooled (raw score values)",
    }


def build_report(
    run_dir: Path,
    runs: Sequence[Any],
    rows_by_run: Mapping[str, list[dict[str, Any]]],
    splits_by_size: Mapping[int, Any],
    skipped: Sequence[str],
    *,
    dse_seeds: Mapping[str, int],
    window: int = CANDIDATE_WINDOW,
    top: int | None = CANDIDATE_TOP,
    linear_probe_kwargs: Mapping[str, Any] | None = None,
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The content of ``validation.json`` (JSON-ready: non-finite numbers are None).

    Args:
        runs, rows_by_run: the runs and their checkpoint rows (``score_runs``).
        splits_by_size: the labelled data per input size (described in ``data``).
        skipped: warnings about runs left out (no evaluations, unreadable).
        dse_seeds: the DSE seed of each run (its monitor's ``probe_seed``).
        window, top, linear_probe_kwargs: the settings, recorded in ``protocol``.
        baselines: per run, the random-init baseline (``{"miou", "seed", ...}``) of
            :func:`dse_tune.evaluation.validate.random_init_baselines`, or None.
    """
    per_run = {
        run.name: run_summary(run, rows_by_run[run.name], dse_seed=dse_seeds[run.name], window=window, top=top,
                              baseline=(baselines or {}).get(run.name))
        for run in runs
    }
    all_rows = [r for run in runs for r in rows_by_run[run.name]]
    pooled = correlations(all_rows)
    reliability = reliability_warnings(per_run)
    taus = {name: [per_run[run.name]["kendall_tau"][name] for run in runs] for name in SCORE_NAMES}
    report = {
        "run_dir": str(run_dir),
        "runs": [run.name for run in runs],
        **_by_statistic(pooled),
        "random_init": {name: finite_or_none((summary["random_init"] or {}).get("miou")) for name, summary in per_run.items()},
        "kendall_tau_mean_over_runs": {name: _mean(values) for name, values in taus.items()},
        "correlations": pooled,
        "selection": aggregate_selection(per_run),
        "per_run": per_run,
        "checkpoints": all_rows,
        "data": {str(size): splits.description for size, splits in splits_by_size.items()},
        "protocol": _protocol(linear_probe_kwargs, window, top),
        "reliability_warnings": reliability,
        "warnings": [
            *skipped,
            *reliability,
            *(f"{r['run']} evaluation {r['index']}: {r['problem']}" for r in all_rows if r.get("problem")),
        ],
    }
    return json_ready(report)
