"""The one per-checkpoint loop of evaluation (score_checkpoints): load, eval mode, score,
and a recorded reason for every checkpoint that cannot be scored."""

from types import SimpleNamespace

import torch
from torch import nn

from dse_tune.checkpoints.tracked_run import score_checkpoints


def test_scores_loaded_models_in_eval_mode_and_records_each_failure(tmp_path):
    run = SimpleNamespace(name="a", path=tmp_path)
    good, corrupt = tmp_path / "good.pt", tmp_path / "corrupt.ckpt"
    torch.save(nn.Linear(2, 1).state_dict(), good)
    corrupt.write_bytes(b"not a checkpoint")

    def load(path, map_location):
        model = nn.Sequential(nn.Linear(2, 1)).train()
        model[0].load_state_dict(torch.load(path, map_location=map_location))
        return model

    def score(model, scored_run):
        assert not model.training and scored_run is run
        return float(model(torch.ones(1, 2)).item())

    jobs = [(run, 0, good), (run, 1, None), (run, 2, tmp_path / "missing.pt"), (run, 3, corrupt)]
    results = list(score_checkpoints(jobs, score, desc="test", progress=False, load=load))

    assert [r.evaluation for r in results] == [0, 1, 2, 3]
    assert isinstance(results[0].value, float) and results[0].problem is None
    assert all(r.value is None for r in results[1:])
    assert results[1].problem == "the evaluation has no checkpoint"
    assert "does not exist" in results[2].problem
    assert results[3].problem.startswith(f"cannot score {corrupt}: ")


def test_default_loader_failure_names_the_checkpoint(tmp_path):
    run = SimpleNamespace(name="a", path=tmp_path)  # not a tracked run: read as a pretraining checkpoint
    broken = tmp_path / "epoch=0.ckpt"
    broken.write_bytes(b"garbage")
    [result] = score_checkpoints([(run, None, broken)], lambda model, _: 1.0, desc="test", progress=False)
    assert result.value is None and str(broken) in result.problem
