from __future__ import annotations

import importlib
import inspect
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dse_tune.integrations.optuna import DSEDegradationPruner
from dse_tune.integrations.optuna.space import build_pruner
from dse_tune.integrations.ray.space import tune_resources
from dse_tune.search_space import (
    PRUNER_OPTIONS,
    PRUNER_TYPES,
    Dimension,
    Resources,
    SearchSpaceError,
    SweepSpec,
    load_search_space,
    parse_search_space,
    resolve_search_space,
    shipped_search_spaces,
)
from tests.sweep_helpers import REPO_ROOT, SPACES


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- valid spaces


def test_parsing_imports_neither_ray_nor_optuna():
    # The search space is plain data: the adapters build their objects from it.
    code = (
        "import sys\n"
        "from dse_tune.search_space import load_search_space\n"
        "for name in ('dino', 'demo_cpu'):\n"
        "    load_search_space(name)\n"
        "load_search_space('dino').to_yaml()\n"
        "print([m for m in ('ray', 'optuna', 'lightning') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


def test_every_shipped_space_loads_with_realistic_settings():
    methods = set()
    for path in sorted(SPACES.glob("*.yaml")):
        spec = load_search_space(path)
        methods.add(spec.fixed.get("method"))
        assert spec.total_trials >= 4, path
        if path.stem != "demo_cpu":
            assert spec.resources.gpu > 0, f"{path}: GPU-scale spaces hold GPUs"
            assert spec.fixed["image_size"] >= 112
    assert {"dino", "ibot", "mae", "mocov3"} <= methods


def test_demo_space_sweeps_two_betas_over_at_least_four_cpu_trials():
    spec = load_search_space(SPACES / "demo_cpu.yaml")
    assert spec.total_trials >= 4
    assert spec.dimensions["dse_beta"].kind == "grid" and len(spec.dimensions["dse_beta"].values) == 2
    assert spec.resources.gpu == 0 and spec.fixed["data"] == "synthetic"


def test_fixed_values_and_every_domain_kind(tmp_path):
    path = write(
        tmp_path,
        """
pretrain:
  method: dino
  epochs: 4
  global_crop_scale: [0.3, 1.0]
  degradation: {warmup: 2}
  lr: {loguniform: [1e-4, 1.0e-3]}
  teacher_momentum: {uniform: [0.99, 0.999]}
  warmup_epochs: {randint: [0, 3]}
  student_temp: {choice: [0.1, 0.2]}
  dse_beta: {grid: [0.0, 0.1]}
search: {algorithm: random, num_samples: 3, max_concurrent_trials: 2, seed: 7}
resources: {cpu: 2, gpu: 0.5}
storage: {path: somewhere, max_failures: 3}
selection: {window: 1, top: 2}
""",
    )
    spec = load_search_space(path)
    assert spec.name == "space" and spec.source == path
    assert spec.fixed == {
        "method": "dino",
        "epochs": 4,
        "global_crop_scale": [0.3, 1.0],
        "degradation": {"warmup": 2},
    }
    assert {n: d.kind for n, d in spec.dimensions.items()} == {
        "lr": "loguniform",
        "teacher_momentum": "uniform",
        "warmup_epochs": "randint",
        "student_temp": "choice",
        "dse_beta": "grid",
    }
    assert spec.dimensions["lr"].low == pytest.approx(1e-4)  # "1e-4" is a float, not text
    assert (spec.num_samples, spec.max_concurrent_trials, spec.sampler_seed) == (3, 2, 7)
    assert spec.total_trials == 6  # 2 grid values x 3 samples
    assert tune_resources(spec.resources) == {"cpu": 2.0, "gpu": 0.5} and spec.resources.accelerator == "gpu"
    assert (spec.storage_path, spec.max_failures) == ("somewhere", 3)
    assert (spec.window, spec.top) == (1, 2)
    config = spec.trial_config({"lr": 3e-4, "dse_beta": 0.1})
    assert (config.lr, config.dse_beta, config.epochs, config.global_crop_scale) == (3e-4, 0.1, 4, (0.3, 1.0))


def test_defaults():
    spec = parse_search_space({"pretrain": {"lr": {"loguniform": [1e-4, 1e-3]}}}, source="x/my_sweep.yaml")
    assert spec.name == "my_sweep"
    assert spec.algorithm == "optuna"  # no grid: OptunaSearch
    assert spec.num_samples == 1 and spec.max_concurrent_trials is None
    assert isinstance(build_pruner(spec.pruner), DSEDegradationPruner)
    assert build_pruner(spec.pruner).rule.warmup == 5
    assert tune_resources(spec.resources) == {"cpu": 1.0, "gpu": 0.0} and spec.resources.accelerator == "cpu"
    assert spec.storage_path == "runs/sweeps" and spec.max_failures == 1
    grid = parse_search_space({"pretrain": {"dse_beta": {"grid": [0.0, 0.1]}}})
    assert grid.algorithm == "random"  # a grid needs Ray's variant generator


def optuna_pruner_class(kind):
    module, name = PRUNER_TYPES[kind]
    return getattr(importlib.import_module(module), name)


def test_the_pruner_option_table_matches_the_pruner_signatures():
    # Parsing checks pruner options without Optuna; this keeps its table in step with Optuna.
    for kind, target in PRUNER_TYPES.items():
        if target is None:
            assert PRUNER_OPTIONS[kind] == {}
            continue
        parameters = inspect.signature(optuna_pruner_class(kind).__init__).parameters
        assert sorted(PRUNER_OPTIONS[kind]) == sorted(set(parameters) - {"self", "rule", "wrapped_pruner"}), kind


REFUSED_PRUNER_OPTIONS = [
    ("median", {"n_startup_trials": -1}),
    ("median", {"interval_steps": 0}),
    ("median", {"n_min_trials": 0}),
    ("percentile", {}),
    ("percentile", {"percentile": 101.0}),
    ("patient", {"patience": -1}),
    ("patient", {"patience": 1, "min_delta": -0.1}),
    ("successive_halving", {"min_resource": 0}),
    ("successive_halving", {"min_resource": "fast"}),
    ("successive_halving", {"reduction_factor": 1}),
    ("successive_halving", {"bootstrap_count": 1}),
    ("hyperband", {"bootstrap_count": 1}),
    ("threshold", {}),
    ("threshold", {"lower": 1.0, "upper": 0.0}),
    ("threshold", {"lower": 0.0, "n_warmup_steps": -1}),
]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize(("kind", "options"), REFUSED_PRUNER_OPTIONS, ids=lambda v: str(v))
def test_pruner_options_optuna_refuses_are_refused_when_parsing(kind, options):
    with pytest.raises(SearchSpaceError, match=f"pruner: {kind} pruner refuses"):
        parse_search_space({"pruner": {"type": kind, **options}})
    wrapped = {"wrapped_pruner": None} if kind == "patient" else {}
    with pytest.raises((TypeError, ValueError)):
        optuna_pruner_class(kind)(**wrapped, **options)


def test_round_trip_through_the_normalized_yaml(tmp_path):
    spec = load_search_space(SPACES / "mocov3.yaml")
    copy = write(tmp_path, spec.to_yaml(), "copy.yaml")
    again = load_search_space(copy)
    assert again.to_dict() == spec.to_dict()
    assert isinstance(again.dimensions["lr"], Dimension)
    no_pruner = parse_search_space({"name": "a", "pruner": None})
    assert parse_search_space(yaml.safe_load(no_pruner.to_yaml())).pruner is None


# --------------------------------------------------------------------------- errors


ERRORS = [
    # (YAML text, substring of the message after "FILE: ")
    ("colour: red\n", "colour: unknown key; known keys: name, pretrain"),
    ("pretrain:\n  learning_rate: 0.1\n", "pretrain.learning_rate: not a PretrainConfig field"),
    ("pretrain:\n  lrr: {loguniform: [1.0e-4, 1.0e-3]}\n", "pretrain.lrr: not a PretrainConfig field (did you mean 'lr'?)"),
    ("pretrain:\n  lr: {uniform: [0.1, 0.01]}\n", "pretrain.lr: uniform needs low < high, got [0.1, 0.01]"),
    ("pretrain:\n  lr: {uniform: [0.1, 0.1]}\n", "pretrain.lr: uniform needs low < high"),
    ("pretrain:\n  lr: {loguniform: [0.0, 0.01]}\n", "pretrain.lr: loguniform needs 0 < low"),
    ("pretrain:\n  lr: {loguniform: [-1.0, 0.01]}\n", "pretrain.lr: loguniform needs 0 < low"),
    ("pretrain:\n  warmup_epochs: {randint: [3, 3]}\n", "pretrain.warmup_epochs: randint needs low < high"),
    ("pretrain:\n  warmup_epochs: {randint: [0.5, 3]}\n", "randint needs integer bounds"),
    ("pretrain:\n  lr: {choice: []}\n", "pretrain.lr: choice needs a non-empty list of options"),
    ("pretrain:\n  lr: {grid: []}\n", "pretrain.lr: grid needs a non-empty list of options"),
    ("pretrain:\n  lr: {choice: 0.1}\n", "pretrain.lr: choice needs a non-empty list"),
    ("pretrain:\n  lr: {choice: [0.1, 0.1]}\n", "lists an option twice"),
    ("pretrain:\n  lr: {uniform: [0.1]}\n", "pretrain.lr: uniform needs [low, high], got [0.1]"),
    ("pretrain:\n  lr: {uniform: [a, 0.1]}\n", "pretrain.lr: uniform low must be a finite number, got 'a'"),
    ("pretrain:\n  lr: {uniform: [0.1, .inf]}\n", "uniform high must be a finite number"),
    ("pretrain:\n  lr: fast\n", "pretrain.lr: expected a number, got 'fast' (a string)"),
    ("pretrain:\n  epochs: 2.5\n", "pretrain.epochs: expected an integer, got 2.5"),
    ("pretrain:\n  epochs: true\n", "pretrain.epochs: expected an integer, got True"),
    ("pretrain:\n  epochs: {uniform: [1.0, 5.0]}\n", "uniform draws floats but epochs is an integer"),
    ("pretrain:\n  method: {uniform: [1.0, 5.0]}\n", "uniform draws floats but method is a string"),
    ("pretrain:\n  method: {choice: [dino, 3]}\n", "pretrain.method (choice option): expected a string, got 3"),
    ("pretrain:\n  method: {choice: [dino, simclr]}\n", "pretrain.method='simclr': not a valid pretraining setting: method must be one of"),
    ("pretrain:\n  epochs: 0\n", "pretrain: not a valid pretraining setting: epochs must be a positive integer"),
    ("pretrain:\n  warmup_epochs: {randint: [-2, 3]}\n", "pretrain.warmup_epochs=-2: not a valid pretraining setting"),
    ("pretrain:\n  global_crop_scale: [0.3]\n", "pretrain.global_crop_scale: expected a list"),
    ("pretrain:\n  lr: {loguniorm: [1.0e-4, 1.0e-3]}\n", "pretrain.lr: a search domain is a mapping with one key out of"),
    ("pretrain: [lr]\n", "pretrain: expected a mapping, got a list"),
    ("- a\n- b\n", "expected a mapping of sections, got a list"),
    ("name: 'my sweep'\n", "name: must be a folder name"),
    ("search: {algorithm: tpe}\n", "search.algorithm: must be one of ('optuna', 'random'), got 'tpe'"),
    ("search: {num_samples: 0}\n", "search.num_samples: must be an integer >= 1, got 0"),
    ("search: {num_samples: 2.0}\n", "search.num_samples: must be an integer >= 1, got 2.0"),
    ("search: {max_concurrent_trials: 0}\n", "search.max_concurrent_trials: must be an integer >= 1"),
    ("search: {samples: 3}\n", "search.samples: unknown key (did you mean 'num_samples'?)"),
    ("search: {algorithm: optuna}\npretrain:\n  dse_beta: {grid: [0.0, 0.1]}\n",
     "search.algorithm: optuna cannot enumerate grid dimensions ['dse_beta']"),
    ("pretrain:\n  global_crop_scale: {choice: [[0.3, 1.0], [0.4, 1.0]]}\nsearch: {algorithm: optuna}\n",
     "optuna's categorical distribution needs scalar options"),
    ("pruner: {type: magic}\n", "pruner.type: must be one of ('dse_degradation', 'median'"),
    ("pruner: {type: dse_degradation, warmpu: 3}\n", "pruner.warmpu: unknown key (did you mean 'warmup'?)"),
    ("pruner: {type: dse_degradation, patience: 0}\n", "pruner: dse_degradation pruner refuses {'patience': 0}: patience must be an integer >= 1"),
    ("pruner: {type: median, n_warmup_steps: -1}\n", "pruner: median pruner refuses"),
    ("pruner: {type: none, warmup: 3}\n", "pruner.warmup: unknown key"),
    ("pruner: {type: patient, patience: 1, wrapped: {type: dse_degradation, min_drop: 2.0}}\n",
     "pruner.wrapped: dse_degradation pruner refuses {'min_drop': 2.0}"),
    ("pruner: 3\n", "pruner: expected a mapping with 'type', got int"),
    ("resources: {cpu: 0}\n", "resources.cpu: must be > 0"),
    ("resources: {gpu: -1}\n", "resources.gpu: must be >= 0"),
    ("resources: {gpu: 1.5}\n", "resources.gpu: a fraction shares one GPU"),
    ("resources: {gpu: lots}\n", "resources.gpu: must be a number, got 'lots'"),
    ("resources: {tpu: 1}\n", "resources.tpu: unknown key (did you mean 'gpu'?); known keys: cpu, gpu, workers"),
    ("resources: {gpu: 2}\n", "resources.gpu: 2 GPUs in one process would train on one of them; use workers: 2, gpus_per_worker: 1"),
    ("resources: {workers: 0}\n", "resources.workers: must be an integer >= 1"),
    ("resources: {workers: null}\n", "resources.workers: must be an integer >= 1 (processes per trial), got None"),
    ("resources: {workers: 2, gpus_per_worker: 0.5}\n", "resources.gpus_per_worker: DDP workers need whole GPUs, got 0.5"),
    ("resources: {cpu: 2, cpus_per_worker: 2}\n", "resources: give cpu or cpus_per_worker, not both"),
    ("storage: {path: 's3://bucket/sweeps'}\n", "storage.path: must be a local or shared (NFS) folder"),
    ("storage: {path: ''}\n", "storage.path: must be a folder path"),
    ("storage: {max_failures: -1}\n", "storage.max_failures: must be an integer >= 0"),
    ("storage: {keep: 2}\n", "storage.keep: unknown key"),
    ("selection: {window: -1}\n", "selection.window: must be an integer >= 0"),
    ("selection: {top: 0}\n", "selection.top: must be an integer >= 1"),
    ("pretrain:\n  lr: [\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_errors_name_the_file_the_key_and_the_reason(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SearchSpaceError) as raised:
        load_search_space(path)
    assert str(raised.value).startswith(f"{path}: "), raised.value
    assert message in str(raised.value), raised.value


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SearchSpaceError, match=r"nope\.yaml: cannot read the search space: no such file \(shipped examples: demo_cpu, dino, "):
        load_search_space(tmp_path / "nope.yaml")


def test_every_example_space_is_shipped_with_the_package():
    shipped = shipped_search_spaces()
    assert sorted(shipped) == sorted(path.stem for path in SPACES.glob("*.yaml"))
    for name, path in shipped.items():
        assert path.read_bytes() == (SPACES / f"{name}.yaml").read_bytes()


@pytest.mark.parametrize("given", ["dino", "dino.yaml", "search_spaces/dino.yaml"])
def test_a_shipped_space_is_found_by_name_from_any_folder(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    assert resolve_search_space(given) == shipped_search_spaces()["dino"]
    assert load_search_space(given).fixed["method"] == "dino"


def test_a_local_file_wins_over_the_shipped_space_and_other_folders_are_not_redirected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("dino.yaml").write_text("pretrain: {method: mae, epochs: 2}\n")
    assert load_search_space("dino.yaml").fixed["method"] == "mae"
    with pytest.raises(SearchSpaceError, match=r"elsewhere/dino\.yaml: cannot read the search space: no such file"):
        load_search_space("elsewhere/dino.yaml")


def test_search_space_error_is_a_value_error():
    assert issubclass(SearchSpaceError, ValueError)


def test_empty_file_is_a_single_default_trial(tmp_path):
    spec = load_search_space(write(tmp_path, ""))
    assert isinstance(spec, SweepSpec) and spec.dimensions == {} and spec.total_trials == 1
    assert spec.base_config() == {}


def test_null_settings_take_the_sweep_spec_defaults():
    spec = parse_search_space({"search": {"num_samples": None, "seed": None}, "selection": {"top": None}})
    assert (spec.num_samples, spec.sampler_seed, spec.top) == (SweepSpec.num_samples, None, SweepSpec.top)
    assert parse_search_space({"search": {"seed": 7}, "storage": {"max_failures": 0}}).sampler_seed == 7


def test_corner_values_of_ranges():
    assert Dimension("e", "randint", low=1, high=4).corner_values() == [1, 3]
    assert Dimension("lr", "loguniform", low=1e-4, high=1e-2).corner_values() == [1e-4, 1e-2]
    assert math.prod([len(Dimension("b", "grid", values=(0.0, 0.1)).corner_values())]) == 2


def test_a_trial_over_several_workers_is_declared_per_worker_and_round_trips():
    spec = parse_search_space({"resources": {"workers": 2, "gpus_per_worker": 1, "cpus_per_worker": 4}})
    resources = spec.resources
    assert (resources.workers, resources.cpu, resources.gpu) == (2, 4.0, 1.0)
    assert resources.distributed and resources.accelerator == "gpu"
    assert spec.to_dict()["resources"] == {"workers": 2, "cpus_per_worker": 4.0, "gpus_per_worker": 1.0}
    assert parse_search_space(spec.to_dict()).resources == resources
    one = parse_search_space({"resources": {"cpu": 2, "gpu": 0.5}}).resources
    assert not one.distributed and one.workers == 1 and one.to_dict() == {"cpu": 2.0, "gpu": 0.5}
    # workers: 1 with per-worker names is the one-process trial.
    assert parse_search_space({"resources": {"workers": 1, "gpus_per_worker": 0.5}}).resources == Resources(1.0, 0.5, 1)


def test_the_multi_gpu_dino_space_spans_four_ddp_workers():
    spec = load_search_space(SPACES / "dino_multigpu.yaml")
    assert (spec.resources.workers, spec.resources.gpu, spec.resources.cpu) == (4, 1.0, 8.0)
    single = load_search_space(SPACES / "dino.yaml")
    # The same method settings as dino.yaml; only the scale of a trial differs.
    shared = {k: v for k, v in single.fixed.items() if k not in ("batch_size", "strategy", "precision", "num_workers")}
    assert {k: spec.fixed.get(k) for k in shared} == shared
    assert set(spec.dimensions) == set(single.dimensions)


def test_checkpoints_to_keep_is_ignored_with_a_warning():
    """Tune keeps no checkpoints now (the run folder keeps every one): old spaces still load."""
    with pytest.warns(DeprecationWarning, match="storage.checkpoints_to_keep is ignored"):
        spec = parse_search_space({"pretrain": {"lr": 1e-3}, "storage": {"checkpoints_to_keep": 2}})
    assert "checkpoints_to_keep" not in spec.to_dict()["storage"]
