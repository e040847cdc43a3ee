"""Evaluation after training: held-out rescoring (no labels) and validation (labels).

Three words keep one meaning each across dse_tune: the **probe set** is a run's fixed,
unlabelled monitoring images (``probe_size``, :func:`dse_tune.data.build_probe_set`);
the **linear probe** is validation's labelled classifier on frozen dense tokens
(:mod:`.linear_probe`); the **held-out set** is the one set of images, outside every
run's probe set, that rescoring scores all candidates on (:mod:`.held_out`).

Modules: :mod:`.held_out` and :mod:`.rescore` (``rescore_sweep``, ``load_rescored``);
:mod:`.linear_probe` (with :mod:`.linear_probe_solvers`, :mod:`.token_grid`) and
:mod:`.labelled_data`; :mod:`.validate` (load -> score -> report -> write), with
:mod:`.report` and :mod:`.plot`; :mod:`.few_label` and :mod:`.label_check` (decisions
checked with a few labels); :mod:`.sweep_selection` (a sweep's final decision).

The names in ``__all__`` are loaded on first use: importing this package loads no
torch. (``validate`` is the submodule; the function is ``validate.validate``.)

Example:
    >>> from dse_tune import evaluation
    >>> evaluation.load_rescored.__module__
    'dse_tune.evaluation.rescore'
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that owns it
_EXPORTS = {
    "HeldOutSet": "dse_tune.evaluation.held_out",
    "held_out_set_for": "dse_tune.evaluation.held_out",
    "LinearProbe": "dse_tune.evaluation.linear_probe",
    "LinearProbeResult": "dse_tune.evaluation.linear_probe",
    "evaluate_linear_probe": "dse_tune.evaluation.linear_probe",
    "fit_linear_probe": "dse_tune.evaluation.linear_probe",
    "linear_probe_model": "dse_tune.evaluation.linear_probe",
    "RescoredCheckpoint": "dse_tune.evaluation.rescore",
    "load_rescored": "dse_tune.evaluation.rescore",
    "rescore_sweep": "dse_tune.evaluation.rescore",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dse_tune.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
