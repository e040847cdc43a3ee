"""The probe-regime study of docs/validation.md ("Probe regime"): does DSE rank a run's
checkpoints like the linear probe's mIoU, and does that depend on the probe images' size?

    # 1. per run: linear-probe mIoU of every checkpoint at the training size (train -> test)
    dse-tune validate RUN --data CAMVID --out RUN/validation --threads 1 --no-progress
    # 2. per run: DSE of every checkpoint on the run's own monitoring images at each size
    python benchmarks/probe_regime.py score RUN [RUN ...] --out docs/results/probe_regime
    # 3. tables (Kendall tau, selection gain, split-half and cross-size agreement, the
    #    reliability verdict's hit and false-alarm rates) from the files step 2 wrote
    python benchmarks/probe_regime.py analyse docs/results/probe_regime [--json]
    # 4. what the product decided on each run (its recorded noise), from validate reports
    python benchmarks/probe_regime.py outcomes docs/results/validation_probe_study_*.json

Step 2 rebuilds each run's monitoring probe set (:func:`dse_tune.data.probe_set_for`:
the same images the monitor scored, ``probe_size`` of them) at every ``--sizes`` entry
(``N``, ``HxW`` or ``native``), computes the tokens of every checkpoint once per size and
DSE (the monitor's settings, seed ``probe_seed``) on all images, on two disjoint halves
(even / odd positions: split-half agreement) and on every 4th image (the cheap subset a
reliability check may score). It copies each checkpoint's mIoU from step 1 and writes
``scores_<run>.json`` (no checkpoint needed afterwards). Step 3 reads only those files,
plus the committed ``docs/results/validation_camvid_*.json`` with ``--committed``.

Labels are used here to *judge* the label-free signals, never by them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The sizes of the study: the training size (64), 1.5x, 2x, CamVid's native 120x160, 0.75x.
SIZES = ("64x64", "96x96", "128x128", "native", "48x64")
SUBSETS = {"all": slice(None), "half_a": slice(0, None, 2), "half_b": slice(1, None, 2), "quarter": slice(0, None, 4)}
#: A run DSE ranks badly: tau(DSE, mIoU) below this, or a selection loss (below).
BAD_TAU = 0.25
#: ... or the default selector's choice this many mIoU points below the last checkpoint.
SELECTION_LOSS_POINTS = 0.1


# --------------------------------------------------------------------------- scoring


def _validation_rows(run_dir: Path) -> dict[int, dict]:
    """Checkpoint rows of ``RUN/validation/validation.json`` by index (empty when absent)."""
    path = run_dir / "validation" / "validation.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    return {row["index"]: row for row in report["checkpoints"]}


def _labelled_splits(config: dict, data: str):
    """The labelled splits of ``dse-tune validate`` at the run's training size (train -> test)."""
    from dse_tune.evaluation.labelled_data import load_labelled_splits

    return load_labelled_splits(data, image_size=int(config["image_size"]), train_split="train", eval_split="test")


def _score_subsets(tokens, seed: int) -> tuple[dict, dict]:
    from dse_tune.metrics import score_tokens

    values, seconds = {}, {}
    for name, part in SUBSETS.items():
        started = time.perf_counter()
        result = score_tokens(tokens[part], seed=seed)
        seconds[name] = time.perf_counter() - started
        values[name] = result.score if result.ok else None
        if name == "all" and result.ok:
            values.update({f"all_{c}": getattr(result, c) for c in ("inter", "intra_image", "intra_batch", "dim")})
    return values, seconds


def _score_checkpoint(model, probes: dict, seed: int) -> dict:
    from dse_tune.features import dense_tokens_batched

    scored = {}
    for size, probe in probes.items():
        started = time.perf_counter()
        tokens = dense_tokens_batched(model, probe.images).float()
        token_seconds = time.perf_counter() - started
        values, seconds = _score_subsets(tokens, seed)
        scored[size] = {**values, "seconds_tokens": token_seconds, **{f"seconds_dse_{k}": v for k, v in seconds.items()}}
    return scored


def _miou(model, run_dir: Path, index: int, rows: dict, state: dict) -> float:
    """The checkpoint's mIoU from the run's validation report, else the same linear probe
    (:func:`dse_tune.evaluation.validate.score_checkpoint`, labelled splits built once)."""
    if rows.get(index, {}).get("miou") is not None:
        return rows[index]["miou"]
    from dse_tune.evaluation.validate import score_checkpoint

    if "splits" not in state:
        state["splits"] = _labelled_splits(state["config"], state["data"])
    return score_checkpoint(model, state["splits"], label_free=False)["miou"]


def spread_order(items: list) -> list:
    """``items`` reordered so that every prefix is spread over the whole run (0, 8, 4,
    12, 2, ...: a bit-reversal order), so that an interrupted pass still covers it."""
    bits = max(1, (len(items) - 1).bit_length())
    keys = [int(f"{i:0{bits}b}"[::-1], 2) for i in range(len(items))]
    return [item for _, item in sorted(zip(keys, items))]


def score_run(run_dir: Path, sizes, target: Path, data: str | None = None, threads: int = 1) -> dict:
    """DSE of every checkpoint of ``run_dir`` at every size, with its mIoU (see module
    doc), written to ``target`` after every checkpoint. Evaluations already in ``target``
    (an earlier, partial output) are kept, not rescored."""
    from dse_tune.atomic import atomic_write_text
    import torch

    from dse_tune.checkpoints.tracked_run import checkpoint_loader
    from dse_tune.data import dataset_for, probe_set_for
    from dse_tune.runs import read_config, read_run

    torch.set_num_threads(threads)
    run, config = read_run(run_dir), read_config(run_dir)
    rows = _validation_rows(run_dir)
    dataset = dataset_for(config)
    probes = {size: probe_set_for(config, dataset=dataset, image_size=size) for size in sizes}
    seed = int(config.get("probe_seed") or 0)
    load, state = checkpoint_loader(run_dir), {"config": config, "data": data or config["data"]}
    previous = json.loads(target.read_text()) if target.is_file() else {}
    done = {e["index"]: e for e in previous.get("evaluations", []) if set(sizes) <= set(e.get("sizes", {}))}
    evaluations = list(done.values())
    result = {"run": run.name, "method": config.get("method"), "beta": config.get("dse_beta") or 0.0,
              "image_size": config.get("image_size"), "probe_size": config.get("probe_size"),
              "sizes": {s: list(p.image_size) for s, p in probes.items()}, "probe_images": len(probes[sizes[0]]),
              "evaluations": evaluations}
    for evaluation in spread_order(run.evaluations):
        checkpoint = run.checkpoint_path(evaluation)
        if evaluation.index in done or checkpoint is None or not checkpoint.is_file():
            continue
        model = load(checkpoint, map_location="cpu").eval()
        entry = {"index": evaluation.index, "epoch": evaluation.epoch, "global_step": evaluation.global_step,
                 "dse_monitored": evaluation.dse, "miou": _miou(model, run_dir, evaluation.index, rows, state),
                 "sizes": _score_checkpoint(model, probes, seed)}
        evaluations.append(entry)
        evaluations.sort(key=lambda e: e["index"])
        atomic_write_text(target, json.dumps(result, indent=1))
        print(f"{run.name} #{evaluation.index} epoch {evaluation.epoch} miou {entry['miou']:.4f}: " + ", ".join(
            f"{s} {fmt(entry['sizes'][s]['all'], 4)}" for s in sizes), flush=True)
    atomic_write_text(target, json.dumps(result, indent=1))
    return result


def measure_cost(checkpoint: Path, run_dir: Path, repeats: int = 3) -> dict:
    """CPU seconds (process time, so other jobs on the machine do not count) of the
    monitor's plain scoring (tokens + DSE of the probe images at the training size) and
    of each candidate alternate regime, the median of ``repeats``."""
    import statistics

    import torch

    from dse_tune.checkpoints.tracked_run import checkpoint_loader
    from dse_tune.data import dataset_for, probe_set_for
    from dse_tune.features import dense_tokens_batched
    from dse_tune.metrics import score_tokens
    from dse_tune.runs import read_config

    torch.set_num_threads(1)
    config = read_config(run_dir)
    model = checkpoint_loader(run_dir)(checkpoint, map_location="cpu").eval()
    dataset, seed = dataset_for(config), int(config.get("probe_seed") or 0)
    regimes = {"plain 64x64 all": ("64x64", "all"), "64x64 two halves (split-half)": ("64x64", "halves"),
               **{f"{size} {part}": (size, part) for size in ("96x96", "48x64", "128x128", "native") for part in ("all", "quarter")}}
    images = {size: probe_set_for(config, dataset=dataset, image_size=size).images for size, _ in regimes.values()}
    seconds = {}
    for name, (size, part) in regimes.items():
        batch = images[size] if part in ("all", "halves") else images[size][SUBSETS[part]]
        runs = []
        for _ in range(repeats):
            started = time.process_time()
            tokens = dense_tokens_batched(model, batch).float()
            for half in ((SUBSETS["half_a"], SUBSETS["half_b"]) if part == "halves" else (slice(None),)):
                score_tokens(tokens[half], seed=seed)
            runs.append(time.process_time() - started)
        seconds[name] = statistics.median(runs)
    plain = seconds["plain 64x64 all"]
    return {name: {"cpu_seconds": value, "relative_to_plain": value / plain} for name, value in seconds.items()}


# --------------------------------------------------------------------------- analysis


def kendall(x, y) -> float | None:
    from dse_tune.reliability import kendall_tau

    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    return kendall_tau([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 3 else None


def series(scores: dict, size: str, subset: str = "all") -> list:
    return [e["sizes"].get(size, {}).get(subset) if e.get("sizes") else None for e in scores["evaluations"]]


def chosen_position(scores: dict, values: list) -> int | None:
    """Position the default selector (:func:`dse_tune.selection.select_run`) keeps on ``values``."""
    from dse_tune.runs import Evaluation, RunRecord
    from dse_tune.selection import select_run

    record = RunRecord(scores["run"], tuple(
        Evaluation(index=e["index"], dse=math.nan if v is None else v, epoch=e["epoch"], global_step=e["global_step"],
                   checkpoint=f"#{e['index']}") for e, v in zip(scores["evaluations"], values)))
    return select_run(record).chosen


def selection_gain(scores: dict, values: list) -> tuple[float | None, int | None]:
    """mIoU points of the default selector's choice on ``values`` minus the last checkpoint's."""
    evals = scores["evaluations"]
    chosen = chosen_position(scores, values)
    mious = [e["miou"] for e in evals]
    if chosen is None or mious[chosen] is None or mious[-1] is None:
        return None, None
    return 100 * (mious[chosen] - mious[-1]), evals[chosen]["epoch"]


def regime_table(scores: dict, sizes) -> dict:
    """Per size: tau vs mIoU, selection gain, split-half agreement, agreement with the
    training size (all images and every 4th image)."""
    mious = [e["miou"] for e in scores["evaluations"]]
    primary = series(scores, sizes[0])
    table = {}
    for size in sizes:
        values = series(scores, size)
        gain, epoch = selection_gain(scores, values)
        table[size] = {"tau": kendall(values, mious), "gain_vs_last": gain, "chosen_epoch": epoch,
                       "split_half": kendall(series(scores, size, "half_a"), series(scores, size, "half_b")),
                       "agreement_with_training_size": kendall(primary, values) if size != sizes[0] else None,
                       "agreement_quarter": kendall(primary, series(scores, size, "quarter")),
                       "tau_quarter": kendall(series(scores, size, "quarter"), mious)}
    best = max((m for m in mious if m is not None), default=None)
    table["miou_range"] = [min(m for m in mious if m is not None), best] if best is not None else None
    return table


def bad_ranking(tau: float | None, gain: float | None) -> bool:
    """The label: DSE ranks this run badly (tau < 0.25 or a selection loss)."""
    return tau is None or tau < BAD_TAU or (gain is not None and gain < -SELECTION_LOSS_POINTS)


def cost_table(scores: dict, sizes) -> dict:
    """Mean seconds per checkpoint: tokens + DSE per size and subset, relative to the
    training size on all images (the monitor's plain scoring)."""
    def mean(size, key):
        values = [e["sizes"][size][key] for e in scores["evaluations"] if e.get("sizes") and size in e["sizes"]]
        return sum(values) / len(values) if values else math.nan

    plain = mean(sizes[0], "seconds_tokens") + mean(sizes[0], "seconds_dse_all")
    table = {}
    for size in sizes:
        tokens = mean(size, "seconds_tokens")
        for subset, share in (("all", 1.0), ("quarter", 0.25), ("half_a", 0.5)):
            seconds = tokens * share + mean(size, f"seconds_dse_{subset}")
            table[f"{size}/{subset}"] = {"seconds": seconds, "relative_to_plain": seconds / plain}
    return table


#: Reliability signals judged here: name -> (alternate size, subset of the probe images).
#: "split_half" compares the two halves at the training size instead.
SIGNALS = {
    "96x96 all": ("96x96", "all"), "96x96 quarter": ("96x96", "quarter"), "128x128 quarter": ("128x128", "quarter"),
    "48x64 all": ("48x64", "all"), "48x64 quarter": ("48x64", "quarter"), "native quarter": ("native", "quarter"),
    "split_half": None,
}
THRESHOLDS = (0.0, 0.25, 0.5)


def signal_values(scores: dict, primary: str) -> dict:
    """Signal name -> value. Agreement signals: Kendall tau between the training size's
    ranking and the alternate one (fires below a threshold). "decision" signals: +1 when
    the alternate regime also ranks the selector's choice above the last checkpoint (or
    the choice is the last one), -1 when it does not (fires)."""
    values = {"cluster_share": cluster_share(series(scores, primary), [
        None if e["sizes"].get(primary, {}).get("all_inter") is None else class_relevance(e["sizes"][primary], "all_")
        for e in scores["evaluations"]])}
    main = series(scores, primary)
    chosen = chosen_position(scores, main)
    for name, spec in SIGNALS.items():
        if spec is None:
            values[name] = kendall(series(scores, primary, "half_a"), series(scores, primary, "half_b"))
        elif spec[0] in scores["sizes"]:
            alternate = series(scores, *spec)
            values[name] = kendall(main, alternate)
            last = len(alternate) - 1
            if chosen is not None and alternate[chosen] is not None and alternate[last] is not None:
                values[f"{name} decision"] = 1.0 if chosen == last or alternate[chosen] > alternate[last] else -1.0
    return values


def class_relevance(values: dict, prefix: str) -> float:
    return values[f"{prefix}inter"] - (values[f"{prefix}intra_image"] + values[f"{prefix}intra_batch"]) / 2


def cluster_share(dse: list, relevance: list) -> float | None:
    """Kendall tau between DSE and its cluster term (class relevance) over the run's
    evaluations, as the negative (so that, like the agreements, low values fire)."""
    from dse_tune.reliability import cluster_driven

    value = cluster_driven(dse, relevance)
    return None if value is None else -value


def default_decision(name: str, rows: list[dict]) -> dict:
    """What the product's default decision (:func:`dse_tune.decision.run_choice`, the one
    ``dse-tune track`` and ``select`` make) does on one run's training-size history, and
    whether that meets issue 17's bar: tau(DSE, mIoU) >= 0.25, or the ranking verdict
    fired and the latest checkpoint was kept. ``rows``: per evaluation ``epoch``,
    ``global_step``, ``dse``, ``components`` (inter, intra_image, intra_batch, dim) and
    ``miou``. The histories record no ``dse_noise`` (they predate it): each value gets the
    run's own scatter as its noise, as in benchmarks/selection_rules.py."""
    from dse_tune.decision import run_choice, scatter_noise
    from dse_tune.runs import Evaluation, RunRecord

    values = [math.nan if r["dse"] is None else r["dse"] for r in rows]
    noise = scatter_noise(values)
    record = RunRecord(name, tuple(
        Evaluation(index=i, dse=v, epoch=r["epoch"], global_step=r["global_step"], checkpoint=f"{name}#{i}",
                   noise=noise, components=r["components"]) for i, (r, v) in enumerate(zip(rows, values))))
    choice = run_choice(record)
    mious = [r["miou"] for r in rows]
    tau = kendall(values, mious)
    kept_latest = choice.chosen == len(rows) - 1
    return {"evaluations": len(rows), "tau": tau, "verdict": choice.verdict, "reason": choice.reason,
            "chosen_epoch": rows[choice.chosen]["epoch"], "last_epoch": rows[-1]["epoch"],
            "gain_vs_last": 100 * (mious[choice.chosen] - mious[-1]),
            "bar_met": (tau is not None and tau >= BAD_TAU) or (choice.verdict == "not_reliable" and kept_latest)}


def print_default_decisions(decisions: dict) -> None:
    print("\nthe default decision on every run (training-size history; bar: tau >= %.2f, or 'not reliable' and the"
          " latest kept)\n\n| run | evaluations | tau(DSE, mIoU) | decision | chosen / last epoch | gain vs last |"
          " bar met |\n|---|---|---|---|---|---|---|" % BAD_TAU)
    for name, d in decisions.items():
        print(f"| {name} | {d['evaluations']} | {fmt(d['tau'])} | {d['verdict']} | {d['chosen_epoch']} / "
              f"{d['last_epoch']} | {d['gain_vs_last']:+.2f} | {'yes' if d['bar_met'] else 'NO'} |")
    met = sum(d["bar_met"] for d in decisions.values())
    print(f"bar met on {met} of {len(decisions)} runs; not met: "
          + (", ".join(n for n, d in decisions.items() if not d["bar_met"]) or "none"))


def report_outcomes(path: Path) -> dict:
    """What the product decided on each run of a ``dse-tune validate`` report, beside the
    labels: the report's ``selection`` is the one decision ``select`` and ``track`` make
    (the run's recorded history, its recorded noise), ``kendall_tau`` of the monitored DSE
    against mIoU is the ranking. Same keys as :func:`default_decision`. A run whose report
    predates the verdict (no ``reliability``) is left out, with a note on stderr."""
    report = json.loads(Path(path).read_text())
    out = {}
    for name, run in report["per_run"].items():
        selection, tau = run["selection"], run["kendall_tau"]["dse_monitored"]
        if "reliability" not in selection:
            print(f"{path}: run {name}: the report predates the reliability verdict; left out", file=sys.stderr)
            continue
        kept_latest = selection["selected"]["index"] == selection["last"]["index"]
        out[name] = {"evaluations": sum(1 for r in report["checkpoints"] if r["run"] == name), "tau": tau,
                     "verdict": selection["reliability"], "reason": selection["reliability_reason"],
                     "chosen_epoch": selection["selected"]["epoch"], "last_epoch": selection["last"]["epoch"],
                     "gain_vs_last": 100 * selection["gain_vs_last"],
                     "bar_met": (tau is not None and tau >= BAD_TAU) or (selection["reliability"] == "not_reliable" and kept_latest)}
    return out


def study_rows(scores: dict, size: str) -> list[dict]:
    """A scored run's evaluations at ``size`` in :func:`default_decision`'s shape."""
    def part(e, key):
        return e["sizes"].get(size, {}).get(key) if e.get("sizes") else None

    return [{"epoch": e["epoch"], "global_step": e["global_step"], "dse": part(e, "all"), "miou": e["miou"],
             "components": {k: part(e, f"all_{k}") for k in ("inter", "intra_image", "intra_batch", "dim")
                            if part(e, f"all_{k}") is not None}} for e in scores["evaluations"]]


def committed_rows(paths) -> dict:
    """Committed validation reports (64 px only): the label and the one agreement they
    allow, monitored DSE (64 training images) vs DSE on the 232 test images."""
    from dse_tune.runs import Evaluation, RunRecord
    from dse_tune.selection import select_run

    out = {}
    for path in paths:
        report = json.loads(Path(path).read_text())
        for name in report["per_run"]:
            rows = sorted((r for r in report["checkpoints"] if r["run"] == name), key=lambda r: r["index"])
            monitored, mious = [r["dse_monitored"] for r in rows], [r["miou"] for r in rows]
            record = RunRecord(name, tuple(Evaluation(index=r["index"], dse=r["dse_monitored"], epoch=r["epoch"],
                                                      global_step=r["global_step"]) for r in rows))
            chosen = select_run(record).chosen
            gain = 100 * (mious[chosen] - mious[-1])
            tau = kendall(monitored, mious)
            relevance = [class_relevance(r, "dse_monitored_") for r in rows]
            history = [{"epoch": r["epoch"], "global_step": r["global_step"], "dse": r["dse_monitored"], "miou": r["miou"],
                        "components": {k: r[f"dse_monitored_{k}"] for k in ("inter", "intra_image", "intra_batch", "dim")
                                       if r.get(f"dse_monitored_{k}") is not None}} for r in rows]
            out[name] = {"tau": tau, "gain_vs_last": gain, "bad": bad_ranking(tau, gain),
                         "default_decision": default_decision(name, history),
                         "image_set_agreement": kendall(monitored, [r["dse"] for r in rows]),
                         "cluster_share": cluster_share(monitored, relevance)}
    return out


def rates(labels: dict, values: dict, threshold: float) -> dict:
    """Hit rate (fires on bad runs) and false-alarm rate (fires on good runs) of
    "agreement < threshold"; runs without a value are left out."""
    judged = [(labels[r], values[r] < threshold) for r in labels if values.get(r) is not None]
    bad = [fires for is_bad, fires in judged if is_bad]
    good = [fires for is_bad, fires in judged if not is_bad]
    return {"hits": sum(bad), "bad_runs": len(bad), "false_alarms": sum(good), "good_runs": len(good),
            "fires_on": [r for r in labels if values.get(r) is not None and values[r] < threshold]}


def analyse_folder(folder: Path, committed, write_json: bool) -> dict:
    runs = {}
    for path in sorted(folder.glob("scores_*.json")):
        scores = json.loads(path.read_text())
        runs[scores["run"]] = scores
    sizes = [s for s in SIZES if all(s in r["sizes"] for r in runs.values())]
    tables = {name: regime_table(scores, sizes) for name, scores in runs.items()}
    costs = {name: cost_table(scores, sizes) for name, scores in runs.items()}
    labels = {name: bad_ranking(t[sizes[0]]["tau"], t[sizes[0]]["gain_vs_last"]) for name, t in tables.items()}
    signals = {name: signal_values(scores, sizes[0]) for name, scores in runs.items()}
    names = list(dict.fromkeys(name for values in signals.values() for name in values))
    judged = {sig: {str(th): rates(labels, {r: signals[r].get(sig) for r in runs}, th) for th in THRESHOLDS}
              for sig in names}
    old = committed_rows(committed)
    old_judged = {sig: {str(th): rates({r: v["bad"] for r, v in old.items()}, {r: v[sig] for r, v in old.items()}, th)
                        for th in (*THRESHOLDS, -0.25, -0.5)} for sig in ("image_set_agreement", "cluster_share")}
    every = {**{r: {"bad": labels[r], "cluster_share": signals[r].get("cluster_share"),
                    "gain_vs_last": tables[r][sizes[0]]["gain_vs_last"]} for r in runs}, **old}
    pooled = {str(th): rates({r: v["bad"] for r, v in every.items()}, {r: v["cluster_share"] for r, v in every.items()}, th)
              for th in (0.0, -0.25, -0.5)}
    print_regime_tables(tables, sizes)
    print("\nlabels (bad = tau < %.2f or selection loss > %.1f points at the training size):" % (BAD_TAU, SELECTION_LOSS_POINTS))
    for name in runs:
        print(f"  {name}: {'bad' if labels[name] else 'good'}; signals " + ", ".join(
            f"{s} {fmt(v)}" for s, v in signals[name].items()))
    print("\n| signal | threshold | hits / bad runs | false alarms / good runs | fires on |\n|---|---|---|---|---|")
    for sig, by_threshold in judged.items():
        for th, r in by_threshold.items():
            print(f"| {sig} | < {th} | {r['hits']}/{r['bad_runs']} | {r['false_alarms']}/{r['good_runs']} | {', '.join(r['fires_on'])} |")
    for name, cost in costs.items():
        print(f"\ncost per checkpoint, {name}: " + ", ".join(f"{k} {v['relative_to_plain']:.2f}x" for k, v in cost.items()))
    if old:
        print("\ncommitted runs (64 px): tau, gain, label, image-set agreement (monitored vs test DSE)")
        for name, v in old.items():
            print(f"  {name}: tau {fmt(v['tau'])} gain {fmt(v['gain_vs_last'])} {'bad' if v['bad'] else 'good'} "
                  f"image-set agreement {fmt(v['image_set_agreement'])} -tau(cluster term, DSE) {fmt(v['cluster_share'])}")
        for sig, by_threshold in old_judged.items():
            for th, r in by_threshold.items():
                print(f"  {sig} < {th}: hits {r['hits']}/{r['bad_runs']}, false alarms {r['false_alarms']}/{r['good_runs']}: {', '.join(r['fires_on'])}")
    for th, r in pooled.items():
        kept = sum(every[n]["gain_vs_last"] or 0 for n in r["fires_on"])
        missed = [n for n, v in every.items() if v["bad"] and n not in r["fires_on"]]
        alarms = [n for n, v in every.items() if not v["bad"] and n in r["fires_on"]]
        print(f"all runs, cluster_share < {th}: hits {r['hits']}/{r['bad_runs']}, false alarms {r['false_alarms']}/{r['good_runs']}; "
              f"keeping the latest where it fires changes the summed selection gain by {-kept:+.2f} points; "
              f"missed: {', '.join(missed)}; false alarms: {', '.join(alarms)}")
    decisions = {**{r: default_decision(r, study_rows(runs[r], sizes[0])) for r in runs},
                 **{r: v["default_decision"] for r, v in old.items()}}
    print_default_decisions(decisions)
    result = {"sizes": sizes, "runs": tables, "default_decisions": decisions, "labels": labels, "signals": signals, "signal_rates": judged,
              "cost": costs, "committed": old, "committed_rates": old_judged, "cluster_share_rates_all_runs": pooled,
              "label_rule": {"bad_tau": BAD_TAU, "selection_loss_points": SELECTION_LOSS_POINTS}}
    if write_json:
        from dse_tune.atomic import atomic_write_text

        atomic_write_text(folder / "probe_regime.json", json.dumps(result, indent=1))
    return result


# --------------------------------------------------------------------------- printing


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:+.{digits}f}"


def print_regime_tables(tables: dict, sizes) -> None:
    for metric, label in (("tau", "Kendall tau(DSE, mIoU)"), ("gain_vs_last", "selection gain vs last (mIoU points)"),
                          ("split_half", "split-half agreement (tau of the two halves' rankings)"),
                          ("agreement_with_training_size", "agreement with the training size's ranking")):
        print(f"\n{label}\n\n| run | " + " | ".join(sizes) + " |\n|---|" + "---|" * len(sizes))
        for run, table in tables.items():
            print(f"| {run} | " + " | ".join(fmt(table[s][metric]) for s in sizes) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="DSE of every checkpoint at every size (needs the checkpoints)")
    score.add_argument("runs", nargs="+", type=Path)
    score.add_argument("--out", type=Path, required=True)
    score.add_argument("--sizes", nargs="+", default=list(SIZES))
    score.add_argument("--threads", type=int, default=1)
    score.add_argument("--data", help="the runs' data folder (default: each config's)")
    cost = sub.add_parser("cost", help="CPU cost of the alternate regimes relative to the monitor's plain scoring")
    cost.add_argument("run", type=Path)
    cost.add_argument("checkpoint", type=Path)
    cost.add_argument("--out", type=Path, help="write the numbers to this JSON file")
    analyse = sub.add_parser("analyse", help="tables from the score files")
    analyse.add_argument("folder", type=Path)
    analyse.add_argument("--committed", nargs="*", type=Path, default=[], help="validation_*.json reports (64 px only)")
    analyse.add_argument("--json", action="store_true", help="also write FOLDER/probe_regime.json")
    outcomes = sub.add_parser("outcomes", help="the product's recorded decision on each run of validate reports")
    outcomes.add_argument("reports", nargs="+", type=Path, help="dse-tune validate reports (validation.json)")
    args = parser.parse_args(argv)
    if args.command == "outcomes":
        print_default_decisions({name: row for path in args.reports for name, row in report_outcomes(path).items()})
        return
    if args.command == "score":
        args.out.mkdir(parents=True, exist_ok=True)
        for run_dir in args.runs:
            score_run(run_dir, args.sizes, args.out / f"scores_{run_dir.resolve().name}.json", args.data, args.threads)
        return
    if args.command == "cost":
        table = measure_cost(args.checkpoint, args.run)
        for name, row in table.items():
            print(f"{name}: {row['cpu_seconds']:.2f} s CPU, {row['relative_to_plain']:.2f}x plain")
        if args.out:
            from dse_tune.atomic import atomic_write_text

            atomic_write_text(args.out, json.dumps(table, indent=1))
        return
    analyse_folder(args.folder, args.committed, args.json)


if __name__ == "__main__":
    main()
