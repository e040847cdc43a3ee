"""Search spaces as Ray Tune domains and resources."""

from __future__ import annotations

import pytest

from dse_tune.integrations.ray.space import param_space, tune_domain
from dse_tune.search_space import Dimension, parse_search_space


def test_ray_tune_param_space():
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = parse_search_space(
        {
            "pretrain": {
                "lr": {"loguniform": [1e-4, 1e-2]},
                "drop_path_rate": {"uniform": [0.0, 0.2]},
                "warmup_epochs": {"randint": [1, 4]},
                "method": {"choice": ["dino", "mae"]},
                "dse_beta": {"grid": [0.0, 0.1]},
            }
        }
    )
    space = param_space(spec)
    assert isinstance(space["lr"], Float) and isinstance(space["lr"].get_sampler(), Float._LogUniform)
    assert (space["lr"].lower, space["lr"].upper) == (1e-4, 1e-2)
    assert isinstance(space["drop_path_rate"].get_sampler(), Float._Uniform)
    assert isinstance(space["warmup_epochs"], Integer)
    assert (space["warmup_epochs"].lower, space["warmup_epochs"].upper) == (1, 4)  # 4 excluded
    assert isinstance(space["method"], Categorical) and space["method"].categories == ["dino", "mae"]
    assert space["dse_beta"] == {"grid_search": [0.0, 0.1]}
    samples = {space["warmup_epochs"].sample() for _ in range(200)}
    assert samples == {1, 2, 3}


def test_an_unknown_dimension_kind_is_named():
    with pytest.raises(ValueError, match="dimension 'lr': unknown kind 'normal'"):
        tune_domain(Dimension("lr", "normal", low=0.0, high=1.0))
