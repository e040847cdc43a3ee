"""DSERegularizer: value, sign, gradients, cost controls and RNG hygiene."""

from __future__ import annotations

import pytest
import torch

import dse_tune
from dse_tune import DSERegularizer


def tokens(images=16, count=24, dim=16, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(images, count, dim, generator=generator).requires_grad_(requires_grad)


def test_value_is_minus_weight_times_the_metric():
    x = tokens()
    regularizer = DSERegularizer(0.3, global_clusters=8, seed=5)
    value = regularizer(x)
    metric = dse_tune.dse(x, global_clusters=8, seed=5)
    assert float(value) == pytest.approx(-0.3 * metric.score, rel=1e-4)
    assert regularizer.last_components["dse"] == pytest.approx(metric.score, rel=1e-4)
    assert regularizer.last_components["inter"] == pytest.approx(metric.inter, rel=1e-4)


def test_zero_weight_costs_nothing_and_returns_zero():
    regularizer = DSERegularizer(0.0)
    x = tokens(images=2, count=4, requires_grad=True)  # far too small for the clusters: never looked at
    value = regularizer(x)
    assert value.item() == 0.0 and regularizer.last_components == {}


def test_gradient_reaches_the_backbone_parameters():
    backbone = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 16))
    images = torch.randn(16, 24, 8, generator=torch.Generator().manual_seed(1))
    loss = DSERegularizer(1.0, global_clusters=8)(backbone(images))
    loss.backward()
    for parameter in backbone.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
        assert parameter.grad.abs().sum() > 0


def test_minimising_the_term_raises_dse():
    x = torch.nn.Parameter(tokens(images=16, count=24, dim=16, seed=3))
    regularizer = DSERegularizer(1.0, global_clusters=8)
    before = dse_tune.dse(x.detach(), global_clusters=8, seed=0).score
    optimizer = torch.optim.Adam([x], lr=0.02)
    for _ in range(30):
        optimizer.zero_grad()
        regularizer(x).backward()
        optimizer.step()
    after = dse_tune.dse(x.detach(), global_clusters=8, seed=0).score
    assert after > before + 0.1


def test_every_n_steps_computes_one_call_in_n():
    regularizer = DSERegularizer(1.0, global_clusters=8, every_n_steps=3)
    x = tokens()
    values = [float(regularizer(x)) for _ in range(6)]
    assert [value != 0 for value in values] == [True, False, False, True, False, False]


def test_max_images_uses_the_first_images_only():
    x = tokens(images=16)
    capped = DSERegularizer(1.0, global_clusters=8, max_images=8, seed=2)(x)
    assert float(capped) == pytest.approx(-dse_tune.dse(x[:8], global_clusters=8, seed=2).score, rel=1e-4)


def test_global_rng_is_untouched_so_masking_and_dropout_keep_their_streams():
    regularizer = DSERegularizer(1.0, global_clusters=8)
    x = tokens(requires_grad=True)
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    regularizer(x).backward()
    assert torch.equal(torch.rand(4), expected)


def test_successive_calls_draw_fresh_clusterings_from_the_private_generator():
    regularizer = DSERegularizer(1.0, global_clusters=8, seed=0)
    x = tokens()
    first, second = float(regularizer(x)), float(regularizer(x))
    fresh = DSERegularizer(1.0, global_clusters=8, seed=0)
    assert float(fresh(x)) == first  # same seed, same first call
    assert second != first  # the generator advanced (new k-means seeds, new shuffle)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight": -0.1}, "weight must be a number >= 0"),
        ({"weight": float("nan")}, "weight must be a number >= 0"),
        ({"weight": 1.0, "every_n_steps": 0}, "every_n_steps must be an integer >= 1"),
        ({"weight": 1.0, "max_images": 1}, "max_images must be an integer >= 2"),
        ({"weight": 1.0, "dim_estimator": "x"}, "dim_estimator must be one of"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSERegularizer(**kwargs)


def test_too_small_batches_are_refused_with_the_cluster_setting_named():
    with pytest.raises(ValueError, match="global_clusters=24"):
        DSERegularizer(1.0)(tokens(images=2, count=8))


def test_dse_is_computed_in_float32_under_autocast():
    x = tokens()
    expected = DSERegularizer(0.3, global_clusters=8, seed=5)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = DSERegularizer(0.3, global_clusters=8, seed=5)(x)
    assert under_autocast.dtype == torch.float32
    assert float(under_autocast) == pytest.approx(float(expected), rel=1e-5)


def test_global_batch_without_a_process_group_is_the_local_batch():
    x = tokens()
    local = DSERegularizer(0.3, global_clusters=8, seed=5)(x)
    assert float(DSERegularizer(0.3, global_clusters=8, seed=5, global_batch=True)(x)) == pytest.approx(float(local))


def _global_batch_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One of two gloo processes: its half of the batch through the global-batch regulariser."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        full = tokens(images=8, count=16, dim=8)
        mine = full.chunk(world)[rank].clone().requires_grad_(True)
        value = DSERegularizer(0.3, global_clusters=8, seed=5, global_batch=True)(mine)
        value.backward()
        local = DSERegularizer(0.3, global_clusters=8, group_size=4, seed=5)(mine.detach())
        torch.save({"value": value.detach(), "grad": mine.grad, "local": local}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_global_batch_on_two_gloo_processes_is_the_dse_of_the_whole_batch_with_its_gradient(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_global_batch_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    full = tokens(images=8, count=16, dim=8, requires_grad=True)
    loss = DSERegularizer(0.3, global_clusters=8, seed=5)(full)
    loss.backward()
    expected = loss.detach()
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert float(result["value"]) == pytest.approx(float(expected), rel=1e-5), "every rank: DSE of all 8 images"
        # The backward sums both ranks' (equal) gradients of this rank's slice; DDP's
        # averaging of parameter gradients divides that by the world size again.
        torch.testing.assert_close(result["grad"] / 2, full.grad.chunk(2)[rank], rtol=1e-4, atol=1e-6)
        assert float(result["local"]) != pytest.approx(float(expected)), "the local mode scores 4 images only"


def test_computes_next_says_which_calls_compute_dse():
    every_other = DSERegularizer(weight=0.1, global_clusters=4, every_n_steps=2)
    tokens = torch.randn(8, 16, 8)
    seen = []
    for _ in range(4):
        seen.append(every_other.computes_next)
        loss = every_other(tokens)
        assert bool(loss != 0) == seen[-1]
    assert seen == [True, False, True, False]
    assert not DSERegularizer(weight=0.0, global_clusters=4).computes_next
