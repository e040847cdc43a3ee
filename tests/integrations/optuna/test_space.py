"""Search spaces on the Optuna side: sweep specs as distributions and pruners; sampling."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from dse_tune.integrations.optuna import (
    DSEDegradationPruner,
    build_pruner,
    optuna_distribution,
    optuna_distributions,
    optuna_grid,
    suggest_params,
)

search_space = pytest.importorskip(
    "dse_tune.search_space",
    reason="dse_tune/search_space.py (the plain search-space data) is not there yet",
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_distributions_match_the_ranges():
    spec = search_space.parse_search_space(
        {
            "pretrain": {
                "lr": {"loguniform": [1e-4, 1e-2]},
                "drop_path_rate": {"uniform": [0.0, 0.2]},
                "warmup_epochs": {"randint": [1, 4]},
                "method": {"choice": ["dino", "mae"]},
                "dse_beta": {"grid": [0.0, 0.1]},
            },
            "search": {"algorithm": "random"},
        }
    )
    distributions = optuna_distributions(spec)
    assert distributions["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert distributions["drop_path_rate"] == FloatDistribution(0.0, 0.2)
    assert distributions["warmup_epochs"] == IntDistribution(1, 3)  # randint: high excluded
    assert distributions["method"] == CategoricalDistribution(["dino", "mae"])
    assert distributions["dse_beta"] == CategoricalDistribution([0.0, 0.1])
    assert optuna_grid(spec) == {"dse_beta": [0.0, 0.1]}
    # The distributions drive a plain Optuna study (the Optuna path of a sweep).
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask(distributions)
    assert set(trial.params) == set(distributions)
    assert 1 <= trial.params["warmup_epochs"] <= 3


def test_a_dimension_is_read_by_its_attributes():
    # Any object with the Dimension fields will do: the adapter reads plain data.
    assert optuna_distribution(SimpleNamespace(name="x", kind="grid", values=(1, 2))) == (
        CategoricalDistribution([1, 2])
    )
    with pytest.raises(ValueError, match="dimension 'x': unknown kind 'normal'"):
        optuna_distribution(SimpleNamespace(name="x", kind="normal", values=(), low=0, high=1))


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"type": "dse_degradation", "warmup": 2, "patience": 1, "min_drop": 0.2, "smoothing": 2},
         "DSEDegradationPruner"),
        ({"type": "median", "n_startup_trials": 1, "n_warmup_steps": 2}, "MedianPruner"),
        ({"type": "percentile", "percentile": 25.0}, "PercentilePruner"),
        ({"type": "threshold", "lower": 0.5}, "ThresholdPruner"),
        ({"type": "successive_halving"}, "SuccessiveHalvingPruner"),
        ({"type": "hyperband", "min_resource": 1, "max_resource": 10}, "HyperbandPruner"),
        ({"type": "patient", "patience": 2, "wrapped": {"type": "dse_degradation", "warmup": 3}},
         "PatientPruner"),
    ],
)
def test_build_pruner(section, expected):
    pruner = build_pruner(search_space.parse_search_space({"pruner": section}).pruner)
    assert type(pruner).__name__ == expected
    if expected == "DSEDegradationPruner":
        rule = pruner.rule
        assert (rule.warmup, rule.patience, rule.min_drop, rule.smoothing) == (2, 1, 0.2, 2)
    if expected == "PatientPruner":
        assert isinstance(pruner._wrapped_pruner, DSEDegradationPruner)
        assert pruner._wrapped_pruner.rule.warmup == 3


def test_the_default_pruner_is_the_degradation_rule():
    spec = search_space.parse_search_space({"pretrain": {"lr": {"loguniform": [1e-4, 1e-3]}}})
    pruner = build_pruner(spec.pruner)
    assert isinstance(pruner, DSEDegradationPruner) and pruner.rule.warmup == 5


@pytest.mark.parametrize("section", [None, "none", {"type": "none"}])
def test_pruning_can_be_switched_off(section):
    assert build_pruner(search_space.parse_search_space({"pruner": section}).pruner) is None
    assert build_pruner(SimpleNamespace(type="none", options={}, wrapped=None)) is None


def test_suggest_params_from_a_mapping_or_a_function():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest_params(trial, {"warmup_epochs": IntDistribution(1, 3), "epochs": 5})
    assert params["epochs"] == 5 and set(trial.params) == {"warmup_epochs"}
    assert suggest_params(trial, lambda t: {"lr": 0.1}) == {"lr": 0.1}
    with pytest.raises(TypeError, match="must return a mapping of config fields, got list"):
        suggest_params(trial, lambda t: [])
    with pytest.raises(TypeError, match="search_space must be a mapping"):
        suggest_params(trial, 3)
    with pytest.raises(ValueError, match="'no_such_module:f' cannot be imported"):
        suggest_params(trial, "no_such_module:f")
