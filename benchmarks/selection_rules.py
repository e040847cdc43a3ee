"""How good is a selection rule? Judge every rule on validation reports (labels).

    python benchmarks/selection_rules.py docs/results/validation_*.json [--json]

Reads ``dse-tune validate`` reports (per checkpoint: monitored DSE and its components,
DSE on the held-out test images, linear-probe mIoU with all labels), groups the runs
into beta comparisons by name (``camvid_mae_b0``, ``camvid_mae_b0.01`` and
``camvid_mae_b0.1`` compare betas; the key is the name without ``_b<beta>``), applies
each rule through :func:`dse_tune.selection.select_best` and prints, per comparison and
on average, in mIoU points (0-100):

- ``gain_vs_last``: chosen checkpoint minus the last checkpoint of the chosen run;
- ``gap_to_best``: the best checkpoint of the comparison (any run) minus the chosen one;
- ``beta_regret``: the best run's checkpoint (each run's checkpoint chosen by the same
  rule) minus the chosen run's: what the beta choice alone cost. Averaged over the
  comparisons with more than one beta.

Noise: the reports' histories record no ``dse_noise`` (they predate it), so every
evaluation of a run gets the run's own scatter as its standard error
(:func:`dse_tune.decision.scatter_noise`: the robust spread of the second differences
of its monitored DSE, which also counts real changes between checkpoints, so it errs
towards keeping the latest). ``default`` is :func:`select_best` with its defaults on
those records; ``default_replication_noise`` the same with each run's noise measured
instead on two independent image sets (:func:`replication_noise`: monitoring vs test
images); ``default_no_noise`` the same rule comparing bare values; the paper's and
older rules compare bare values (``use_noise=False``), as they did.

Few-label rules need per-checkpoint mIoU from few labels; the reports hold only
full-label mIoU, so they read a sidecar ``few_label_<NAME>.json`` next to
``validation_<NAME>.json`` (written by ``--compute-few-label``: random draws of N
labelled images from a split no report scored, half fitted, half scored, for every
checkpoint; the rule's result is averaged over the draws). Comparisons without a
sidecar are left out of the few-label averages (``n`` says how many were used).

    python benchmarks/selection_rules.py --compute-few-label RUNS_DIR \\
        --report docs/results/validation_X.json --data ../shared/data/camvid --split val
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dse_tune.decision import scatter_noise  # noqa: E402
from dse_tune.runs import Evaluation, RunRecord  # noqa: E402
from dse_tune.selection import select_best  # noqa: E402
from dse_tune.signals import run_signatures  # noqa: E402

BUDGETS = (8, 16, 32, 64)
COMPONENTS = ("inter", "intra_image", "intra_batch", "dim")
#: A run "failed" when its last checkpoint is this many mIoU points below its first.
FAILURE_DROP = 3.0


# --------------------------------------------------------------------------- reading


def read_reports(files):
    """Run name -> {"beta", "rows" (checkpoint rows by index), "few_label" or None}."""
    runs = {}
    for file in files:
        report = json.loads(Path(file).read_text())
        if "checkpoints" not in report or "per_run" not in report:
            raise SystemExit(f"{file}: not a validation report (no 'checkpoints'/'per_run')")
        sidecar = Path(file).with_name(Path(file).name.replace("validation_", "few_label_", 1))
        few = json.loads(sidecar.read_text()) if sidecar.is_file() and sidecar != Path(file) else None
        for name, info in report["per_run"].items():
            rows = sorted((r for r in report["checkpoints"] if r["run"] == name), key=lambda r: r["index"])
            runs[name] = {"beta": info.get("beta") or 0.0, "rows": rows,
                          "few_label": None if few is None else few["runs"].get(name)}
    return runs


def comparison_key(name):
    match = re.match(r"^(.*?)_b[0-9.eE+-]+?(_.*)?$", name)
    return name if match is None else match.group(1) + (match.group(2) or "")


def replication_noise(rows):
    """A run's per-value noise measured on two independent image sets: the reports score
    every checkpoint on the monitoring images (``dse_monitored``) and on the test images
    (``dse``). Between consecutive checkpoints both see the same real change, so the
    difference of their two changes is noise only: four values' worth, hence half its
    robust spread (1.4826 x the median absolute deviation). None without test values.
    Unlike the scatter it counts no real change; and as the errors of nearby checkpoints
    on the same images partly cancel, it can only be too small for distant checkpoints,
    so it errs towards an earlier checkpoint, the opposite way to the scatter."""
    monitored = [r["dse_monitored"] for r in rows]
    test = [r.get("dse") for r in rows]
    if len(rows) < 3 or any(v is None or not math.isfinite(v) for v in monitored + test):
        return None
    gaps = [(monitored[i + 1] - monitored[i]) - (test[i + 1] - test[i]) for i in range(len(rows) - 1)]
    centre = statistics.median(gaps)
    return 1.4826 * statistics.median(abs(g - centre) for g in gaps) / 2


def record(name, run, first_untrained=False, noise_from="scatter"):
    """A RunRecord of the monitored history, each value with the run's scatter (or, with
    ``noise_from="replication"``, :func:`replication_noise`) as its noise;
    ``first_untrained`` marks the first evaluation as step 0 (so ``skip_untrained`` drops
    it, whatever its real step)."""
    values = [math.nan if r["dse_monitored"] is None else r["dse_monitored"] for r in run["rows"]]
    noise = replication_noise(run["rows"]) if noise_from == "replication" else scatter_noise(values)
    evaluations = tuple(
        Evaluation(index=r["index"], dse=value, epoch=r["epoch"],
                   global_step=0 if first_untrained and r["index"] == 0 else r["global_step"],
                   checkpoint=f"{name}#{r['index']}", noise=noise,
                   components={k: r[f"dse_monitored_{k}"] for k in COMPONENTS if r.get(f"dse_monitored_{k}") is not None})
        for r, value in zip(run["rows"], values)
    )
    return RunRecord(name, evaluations, {"dse_beta": run["beta"]})


# --------------------------------------------------------------------------- rules


def miou_of(runs, name, index):
    return 100 * next(r["miou"] for r in runs[name]["rows"] if r["index"] == index)


def lookup(runs, field, draw=None, budget=None):
    def value(run, evaluation):
        row = next(r for r in runs[run.name]["rows"] if r["index"] == evaluation.index)
        if field == "few_label":
            few = runs[run.name]["few_label"]
            return None if few is None else few[str(budget)][draw].get(str(evaluation.index))
        return row.get(field)
    return value


def rule_choices(runs, names):
    """Rule name -> list of (chosen run, chosen index, {run: its own choice index}) per draw."""
    records = [record(n, runs[n]) for n in names]
    # The older rules judge no ranking reliability (dse_tune.reliability): no verdict for any run.
    no_verdict = {n: (None, "") for n in names}
    old = {"skip_untrained": False, "guard": False, "use_noise": False, "ranking": no_verdict}
    bare = {"use_noise": False, "ranking": no_verdict}
    settings = {
        "paper_raw": dict(compare="raw", **old),
        "paper_standardized": dict(compare="raw", score="standardized", **old),
        "rescored": dict(compare="rescored", rescored=lookup(runs, "dse"), **old),
        "conservative": dict(compare="conservative", **old),
        "conservative_skip_untrained": dict(compare="conservative", skip_untrained=True, guard=False, **bare),
        "conservative_skip_first": dict(compare="conservative", skip_untrained=True, guard=False, **bare),
        "guard": dict(compare="conservative", skip_untrained=True, guard=True, **bare),
        "guard_standardized": dict(compare="conservative", score="standardized", skip_untrained=True, guard=True,
                                   **bare),
        "default_no_noise": dict(bare),
        "default_no_verdict": dict(ranking=no_verdict),
        "default": {},
        # The label-rich oracle over the same shortlist: the few-label rule with every label.
        "shortlist_oracle": dict(confirmed=lookup(runs, "miou")),
    }
    first_dropped = [record(n, runs[n], first_untrained=True) for n in names]
    choices = {name: [select_best(first_dropped if name.endswith("skip_first") else records, **kwargs)]
               for name, kwargs in settings.items()}
    # The same default with the noise measured on two image sets instead of the scatter:
    # does the scatter (which also counts real change) alone keep the latest everywhere?
    replicated = [record(n, runs[n], noise_from="replication") for n in names]
    choices["default_replication_noise"] = [select_best(replicated)]
    draws = [runs[n]["few_label"] for n in names]
    if all(d is not None for d in draws):
        for budget in BUDGETS:
            count = min(len(d.get(str(budget), [])) for d in draws)
            if count:
                choices[f"few_label@{budget}"] = [
                    select_best(records, confirmed=lookup(runs, "few_label", draw, budget)) for draw in range(count)
                ]
    out = {name: [(r.best.name, r.best.chosen_index, {t.name: t.chosen_index for t in r.trials}) for r in results]
           for name, results in choices.items()}
    smallest = min(runs[n]["beta"] for n in names)
    last = {n: runs[n]["rows"][-1]["index"] for n in names}
    first_small = next(n for n in names if runs[n]["beta"] == smallest)
    out["last"] = [(first_small, last[first_small], last)]
    best = {n: max(runs[n]["rows"], key=lambda r: r["miou"])["index"] for n in names}
    top = max(names, key=lambda n: miou_of(runs, n, best[n]))
    out["oracle"] = [(top, best[top], best)]
    return out


def metrics(runs, names, choice):
    name, index, per_run = choice
    chosen = miou_of(runs, name, index)
    best = max(miou_of(runs, n, r["index"]) for n in names for r in runs[n]["rows"])
    best_beta = max(miou_of(runs, n, i) for n, i in per_run.items() if i is not None)
    return {"gain_vs_last": chosen - miou_of(runs, name, runs[name]["rows"][-1]["index"]),
            "gap_to_best": best - chosen, "beta_regret": best_beta - chosen, "miou": chosen,
            "chosen": f"{name}@{runs[name]['rows'][index]['epoch']}"}


def evaluate(runs):
    groups = defaultdict(list)
    for name in sorted(runs):
        groups[comparison_key(name)].append(name)
    table = defaultdict(dict)  # rule -> comparison -> metrics (averaged over draws)
    for key, names in groups.items():
        for rule, draws in rule_choices(runs, names).items():
            rows = [metrics(runs, names, draw) for draw in draws]
            averaged = {k: statistics.fmean(r[k] for r in rows) for k in ("gain_vs_last", "gap_to_best", "beta_regret", "miou")}
            averaged.update(chosen=rows[0]["chosen"] if len(rows) == 1 else f"{len(rows)} draws", betas=len(names))
            table[rule][key] = averaged
    return groups, table


def averages(per_comparison):
    multi = [m for m in per_comparison.values() if m["betas"] > 1]
    mean = lambda rows, k: round(statistics.fmean(r[k] for r in rows), 3) if rows else None  # noqa: E731
    values = list(per_comparison.values())
    return {"gain_vs_last": mean(values, "gain_vs_last"), "gap_to_best": mean(values, "gap_to_best"),
            "beta_regret": mean(multi, "beta_regret"), "comparisons": len(values), "beta_comparisons": len(multi)}


def recovery(table):
    """Share of the label-rich oracle's gain (over the default) that few labels recover,
    the oracle choosing among the same shortlist with all labels."""
    out = {}
    for rule, per in table.items():
        if not rule.startswith("few_label@"):
            continue
        default = sum(table["default"][k]["miou"] for k in per)
        oracle = sum(table["shortlist_oracle"][k]["miou"] for k in per) if "shortlist_oracle" in table else None
        few = sum(m["miou"] for m in per.values())
        gain = None if oracle is None else oracle - default
        out[rule] = {"oracle_gain": gain, "few_label_gain": few - default,
                     "recovered": None if not gain else (few - default) / gain}
    return out


def signals(runs):
    """Per run: failed (by labels), flagged (by the label-free signatures)."""
    rows = []
    for name, run in sorted(runs.items()):
        drop = 100 * (run["rows"][0]["miou"] - run["rows"][-1]["miou"])
        found = run_signatures(record(name, run))
        rows.append({"run": name, "failed": drop > FAILURE_DROP, "drop": drop,
                     "flagged": [f"{s.kind}@{s.epoch}" for s in found]})
    hits = sum(r["failed"] and bool(r["flagged"]) for r in rows)
    false_alarms = sum(not r["failed"] and bool(r["flagged"]) for r in rows)
    return rows, hits, false_alarms


# --------------------------------------------------------------------------- few labels


def compute_few_label(args):
    """Few-label probe mIoU of each run's shortlisted checkpoints (the default rule's
    candidates), per budget and random draw; tokens of the split computed once per
    checkpoint, the probe refitted per draw (as :func:`few_label_miou` does)."""
    import random

    import torch

    from dse_tune.evaluation.linear_probe import evaluate_linear_probe, fit_linear_probe
    from dse_tune.features import dense_tokens_batched
    from dse_tune.runs import read_run
    from dse_tune.selection import select_run
    from dse_tune.data import build_probe_set, open_dataset
    from dse_tune.ssl.methods import load_checkpoint

    torch.set_num_threads(args.threads)
    report = json.loads(Path(args.report).read_text())
    data = next(iter(report["data"].values()))
    size, classes = data["image_size"], data["num_classes"]
    dataset = open_dataset(args.data, splits=args.split)
    labelled = build_probe_set(dataset, size=len(dataset), image_size=size)
    draws = {}
    for b in args.budgets:
        for d in range(args.draws):
            # the draw of load_few_label_split(seed=...): sorted sample, halves alternate
            chosen = sorted(random.Random(1000 * b + d).sample(range(len(dataset)), min(b, len(dataset))))
            draws[(b, d)] = (chosen[0::2], chosen[1::2])
    out = {"data": args.data, "split": args.split, "images": len(dataset), "budgets": args.budgets,
           "draws": args.draws, "image_size": size, "num_classes": classes,
           "shortlist": "each run's candidates of the default rule (window 2, top 3)", "runs": {}}
    runs = read_reports([args.report])
    for name in report["per_run"]:
        run = read_run(Path(args.compute_few_label) / name)
        shortlist = select_run(record(name, runs[name])).candidates
        values = {str(b): [{} for _ in range(args.draws)] for b in args.budgets}
        for position in shortlist:
            evaluation = run.evaluations[position]
            model = load_checkpoint(run.checkpoint_path(evaluation), map_location="cpu").eval()
            tokens = dense_tokens_batched(model, labelled.images, batch_size=64).float()
            for (b, d), (fit, score) in draws.items():
                probe = fit_linear_probe(tokens[fit], labelled.masks[fit], classes)
                miou = evaluate_linear_probe(probe, tokens[score], labelled.masks[score]).miou
                values[str(b)][d][str(evaluation.index)] = float(miou)
            print(f"{name} evaluation {evaluation.index}: done", file=sys.stderr, flush=True)
        out["runs"][name] = values
    target = Path(args.report).with_name(Path(args.report).name.replace("validation_", "few_label_", 1))
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}")


# --------------------------------------------------------------------------- output


def share(value):
    return "-" if value is None else f"{value:.0%}"


def fmt(value):
    return "-" if value is None else f"{value:+.2f}"


def print_text(groups, table):
    print("per comparison (mIoU points; chosen run@epoch):")
    for rule, per in table.items():
        print(f"  {rule}")
        for key, m in per.items():
            print(f"    {key:<24} gain_vs_last {fmt(m['gain_vs_last'])}  gap_to_best {fmt(m['gap_to_best'])}  "
                  f"beta_regret {fmt(m['beta_regret']) if m['betas'] > 1 else '-'}  chosen {m['chosen']}")
    print()
    print("| rule | gain vs last | gap to best | beta regret | comparisons (beta) |")
    print("|---|---|---|---|---|")
    for rule, per in table.items():
        a = averages(per)
        print(f"| {rule} | {fmt(a['gain_vs_last'])} | {fmt(a['gap_to_best'])} | {fmt(a['beta_regret'])} | "
              f"{a['comparisons']} ({a['beta_comparisons']}) |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="validation reports (validation_*.json)")
    parser.add_argument("--json", action="store_true", help="one JSON object per rule and line")
    parser.add_argument("--compute-few-label", metavar="RUNS_DIR", help="write the few-label sidecar of --report")
    parser.add_argument("--report", help="the validation report whose runs (in RUNS_DIR) get few-label scores")
    parser.add_argument("--data", help="labelled folder for --compute-few-label")
    parser.add_argument("--split", default="val", help="its split (not one the reports scored)")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.compute_few_label:
        if not (args.report and args.data):
            parser.error("--compute-few-label needs --report and --data")
        return compute_few_label(args)
    if not args.files:
        parser.error("give validation reports")
    runs = read_reports(args.files)
    groups, table = evaluate(runs)
    rows, hits, false_alarms = signals(runs)
    if args.json:
        for rule, per in table.items():
            print(json.dumps({"rule": rule, **averages(per), "per_comparison": per}))
        return 0
    print_text(groups, table)
    print()
    for rule, r in recovery(table).items():
        print(f"{rule}: recovers {fmt(r['few_label_gain'])} of the shortlist oracle's {fmt(r['oracle_gain'])} points "
              f"over the default ({share(r['recovered'])})")
    print()
    failed = sum(r["failed"] for r in rows)
    print(f"failure signatures: {hits} of {failed} failed runs flagged, {false_alarms} false alarms "
          f"in {len(rows) - failed} healthy runs (failed: last checkpoint > {FAILURE_DROP} points below the first)")
    for r in rows:
        print(f"  {r['run']:<28} {'FAILED' if r['failed'] else 'healthy':<8} drop {r['drop']:+.1f}  "
              f"{', '.join(r['flagged']) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
