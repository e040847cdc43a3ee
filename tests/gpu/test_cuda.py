"""What runs on a CUDA device: the metric, the regulariser under bf16 autocast, and a
training step with ``precision="bf16-mixed"``. Each agrees with the CPU where it should.

Marked ``cuda``: skipped on machines without a CUDA device (tests/gpu/conftest.py).
"""

from __future__ import annotations

import math

import pytest
import torch

import dse_tune
from dse_tune import DSERegularizer
from dse_tune.ssl.pretrain import pretrain
from tests import tiny_configs

pytestmark = pytest.mark.cuda
COMPONENTS = ("score", "inter", "intra_image", "intra_batch", "dim")


def seeded_tokens(*size: int) -> torch.Tensor:
    return torch.randn(*size, generator=torch.Generator().manual_seed(0))


def test_dse_components_agree_between_cpu_and_cuda():
    tokens = seeded_tokens(32, 49, 64)
    on_cpu, on_cuda = dse_tune.dse(tokens, seed=0), dse_tune.dse(tokens.cuda(), seed=0)
    for name in COMPONENTS:
        assert getattr(on_cuda, name) == pytest.approx(getattr(on_cpu, name), rel=1e-3, abs=1e-5), name


def test_score_tokens_takes_half_precision_cuda_tokens():
    tokens = seeded_tokens(16, 49, 64).cuda()
    full, half = dse_tune.score_tokens(tokens), dse_tune.score_tokens(tokens.to(torch.bfloat16))
    assert full.ok and half.ok
    assert half.score == pytest.approx(full.score, rel=0.05)  # bf16 rounding of the inputs only


def test_regularizer_gradient_agrees_and_stays_float32_under_bf16_autocast():
    tokens = seeded_tokens(16, 49, 64)
    cpu_leaf = tokens.clone().requires_grad_(True)
    DSERegularizer(1.0, seed=0)(cpu_leaf).backward()
    cuda_leaf = tokens.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        value = DSERegularizer(1.0, seed=0)(cuda_leaf)
    assert value.dtype == torch.float32  # DSE is computed in float32 under autocast
    value.backward()
    assert torch.isfinite(cuda_leaf.grad).all()
    difference = (cuda_leaf.grad.cpu() - cpu_leaf.grad).norm() / cpu_leaf.grad.norm()
    assert float(difference) < 1e-3


@pytest.mark.parametrize("method", ["dino", "mae"])
def test_a_bf16_training_run_on_cuda_scores_and_checkpoints(tmp_path, method):
    config = {**tiny_configs.TINY_DINO, "method": method, "decoder_dim": 32, "decoder_num_heads": 2,
              "precision": "bf16-mixed", "dse_beta": 0.1, "epochs": 1}
    result = pretrain(config, tmp_path, logger=False, enable_progress_bar=False, accelerator="gpu")
    rows = result.history["evaluations"]
    assert len(rows) == 1 and math.isfinite(rows[0]["dse"])
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert next(result.module.parameters()).dtype == torch.float32  # mixed: weights stay float32
