"""Trials on declared logical GPUs, and a trial over two Ray Train workers (gloo, CPU).

Ray accepts GPUs it cannot see (``ray.init(num_gpus=2)``) and still gives each trial
its share through ``CUDA_VISIBLE_DEVICES`` and ``ray.get_gpu_ids()``; torch then sees no
CUDA device, so the real trainable's device mapping (:func:`trial_devices`) must fall
back to the CPU, saying so. The two-worker trial runs the real ``TorchTrainer`` path
end to end: DDP over gloo, one history row per evaluation reported through Ray Train,
stopped by the sweep's pruner on every rank at the same evaluation.
"""

from __future__ import annotations

import json
import os

import pytest

from dse_tune.degradation import DegradationRule
from dse_tune.integrations.ray import OptunaPrunerStopper, run_sweep
from dse_tune.integrations.ray.distributed import PrunerListener, ray_strategy_name
from dse_tune.integrations.ray.trainable import trial_devices
from dse_tune.runs import RunRecord, write_run
from dse_tune.search_space import PrunerSpec, load_search_space
from dse_tune.sweeps import RUNS_DIR, TRIAL_FILE
from tests.integrations.ray.helpers import history, tune_results
from tests.sweep_helpers import ray_worker_environment, write_space


def test_strategies_a_ray_train_trial_takes():
    assert ray_strategy_name("auto") == "RayDDPStrategy"
    with pytest.raises(ValueError, match="strategy 'ddp_spawn' cannot run over Ray Train workers"):
        ray_strategy_name("ddp_spawn")


def test_a_trial_holding_gpus_without_cuda_trains_on_the_cpu_and_says_why(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.warns(UserWarning, match="torch.cuda.is_available\\(\\) is False: training on the CPU"):
        devices = trial_devices(0.5, cuda_available=False)
    assert (devices.accelerator, devices.devices, devices.cuda_visible_devices) == ("cpu", 1, "1")
    assert trial_devices(1, cuda_available=True).accelerator == "gpu"
    assert trial_devices(0).note is None


def test_the_pruner_inside_a_trial_stops_where_the_sweeps_stopper_does(tmp_path):
    values = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.95, 0.85, 0.75, 0.65]
    judge = PrunerListener(PrunerSpec("dse_degradation", {}), "t", tmp_path)
    going_on = DegradationRule(warmup=100).decide(values)  # what the monitor's own rule said
    stops = []
    for i in range(len(values)):
        run = RunRecord.from_values("t", values[: i + 1])
        write_run(tmp_path, run)
        verdict = judge(run.evaluations[-1], going_on)
        stops.append(verdict is not None and verdict.stop)
    assert stops.index(True) == 9 == len(values) - 1
    sweep_stopper = OptunaPrunerStopper(on_stop=None)
    assert [sweep_stopper("t", {"evaluation": i, "dse": v}) for i, v in enumerate(values)] == stops
    assert verdict.reason == f"stopped by the sweep's pruner: {sweep_stopper.stopped['t'].reason}"


# --------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_with_logical_gpus():
    import ray

    ray_worker_environment()
    os.environ["TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"] = "0"
    # Two GPUs Ray believes in; torch on this machine sees none.
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_trials_on_logical_gpus_see_their_share_and_fall_back_to_the_cpu(ray_with_logical_gpus, tmp_path):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this test needs a machine without CUDA")
    spec = load_search_space(
        write_space(
            tmp_path / "half.yaml",
            pretrain={"epochs": 1, "dse_beta": {"grid": [0.0, 0.1]}},
            search={"max_concurrent_trials": 2},
            pruner=None,
            resources={"cpu": 1, "gpu": 0.5},
        )
    )
    summary = run_sweep(spec, tmp_path / "sweep", verbose=0)
    assert summary.complete and {t.status for t in summary.trials} == {"finished"}
    seen = []
    for run_dir in sorted((tmp_path / "sweep" / RUNS_DIR).iterdir()):
        (attempt,) = json.loads((run_dir / TRIAL_FILE).read_text())["attempts"]
        seen.append(attempt)
        # Ray gave the trial one logical GPU id, exported as CUDA_VISIBLE_DEVICES...
        assert len(attempt["gpu_ids"]) == 1 and attempt["cuda_visible_devices"] == attempt["gpu_ids"][0]
        # ...and the trainable, finding no CUDA device, trained on the CPU and said why.
        assert attempt["accelerator"] == "cpu"
        assert "holds 0.5 GPU" in attempt["device_note"] and "training on the CPU" in attempt["device_note"]
        assert json.loads((run_dir / "config.json").read_text())["accelerator"] == "cpu"
    assert len(seen) == 2


@pytest.mark.slow
def test_a_two_worker_trial_trains_with_ddp_reports_and_is_stopped(ray_with_logical_gpus, tmp_path):
    # The threshold pruner stops every trial at evaluation 1 (its first judged step).
    spec = load_search_space(
        write_space(
            tmp_path / "ddp.yaml",
            pretrain={"epochs": 3, "strategy": "ddp"},
            pruner={"type": "threshold", "lower": 1.0e9, "n_warmup_steps": 1},
            resources={"workers": 2, "cpus_per_worker": 0.5},
            storage={"max_failures": 0},
        )
    )
    sweep_dir = tmp_path / "sweep"
    summary = run_sweep(spec, sweep_dir, verbose=0)

    ((trial_id, rows),) = tune_results(sweep_dir).items()
    run_dir = sweep_dir / RUNS_DIR / trial_id
    record = history(run_dir)
    # One history row per evaluation (rank 0 wrote it), none after the stop.
    assert [(e["index"], e["epoch"]) for e in record["evaluations"]] == [(0, 0), (1, 1)]
    assert record["stopped_early"] and "ThresholdPruner pruned at evaluation 1" in record["stop_reason"]
    # Tune saw rank 0's report of each evaluation, with its metrics.
    assert [r["evaluation"] for r in rows] == [0, 1]
    assert [r["dse"] for r in rows] == pytest.approx([e["dse"] for e in record["evaluations"]])
    assert all(r["run_dir"] == str(run_dir.resolve()) for r in rows)
    trial = json.loads((run_dir / TRIAL_FILE).read_text())
    assert trial["attempts"][0]["workers"] == 2
    (summary_trial,) = summary.trials
    assert summary_trial.status == "stopped" and summary_trial.epochs_saved == 1
