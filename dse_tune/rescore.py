"""Held-out rescoring: one fair score for every candidate checkpoint of a sweep.

A run with ``dse_beta > 0`` adds ``-beta * DSE`` to its loss: it optimizes DSE on its
own training images, monitoring probe included. Its monitored DSE is therefore not
comparable with a ``beta = 0`` run's, and the raw comparison favours the largest beta
(``docs/selection.md``). Rescoring scores every candidate checkpoint of every run again,
identically: the **same held-out images** (never in any run's monitoring probe set), in
the same order, with the same DSE settings and seed. The result is the ``rescored``
argument of :func:`dse_tune.selection.select_best` and the ``rescored.json`` file that
:func:`dse_tune.selection.load_rescored` (``dse-tune select --rescored FILE``) reads.

Optionally RankMe and alpha-ReQ (:mod:`dse_tune.metrics`) are computed on the same
tokens: independent label-free scores, which a beta > 0 run did not optimize.

Files written next to each other (``out``, default ``ROOT/rescored.json``)::

    rescored.json        [{"checkpoint": "trial_0001/checkpoints/epoch=0004.ckpt",
                           "dse": 1.23, "run": "trial_0001", "evaluation": 4, "epoch": 4,
                           "monitored_dse": 1.31, "inter": ..., "intra_image": ...,
                           "intra_batch": ..., "dim": ..., "rankme": ..., "alpha_req": ...,
                           "alpha_req_r2": ..., "probe": "sha256:...", "seed": 0,
                           "problem": null}, ...]
    rescored_probe.json  the held-out images (source, indices, fingerprint), what they
                         were checked against, and the settings

Checkpoint paths are relative to the file's folder (absolute when on another drive);
a candidate that could not be scored has ``"dse": null`` and a ``problem``.

Example::

    from dse_tune.rescore import rescore_sweep
    from dse_tune.selection import load_sweep, select_best
    rescored = rescore_sweep("runs/sweep", data="../shared/data/camvid", splits=["val"])
    best = select_best(load_sweep("runs/sweep"), rescored=rescored).best_checkpoint

This module needs torch and the SSL package (to rebuild checkpoints), never Lightning's
Trainer, Optuna or Ray; :mod:`dse_tune.selection` stays free of all of them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dse_tune.atomic import atomic_write_text
from dse_tune.metrics.dse_metric import COMPONENTS
from dse_tune.selection import Evaluation, RunRecord, load_sweep, select_run

__all__ = [
    "PROBE_FILENAME",
    "RESCORED_FILENAME",
    "SCORES",
    "HeldOutProbe",
    "RescoredCheckpoint",
    "build_held_out_probe",
    "held_out_probe_for",
    "image_fingerprint",
    "monitoring_probe_fingerprints",
    "rescore_checkpoint",
    "rescore_runs",
    "rescore_sweep",
    "rescored_mapping",
    "write_rescored",
]

RESCORED_FILENAME = "rescored.json"
PROBE_FILENAME = "rescored_probe.json"
#: Scores that can be computed; ``"dse"`` always is.
SCORES = ("dse", "rankme", "alpha_req")
#: Scores usable as the selection value (higher is better). alpha-ReQ is not one: its
#: best value is near 1, not at an extreme.
SELECTION_SCORES = ("dse", "rankme")
WHICH = ("candidates", "all")
# The PretrainConfig fields that decide which images a run trained and monitored on.
_DATA_FIELDS = ("data", "splits", "synthetic_size", "seed")


# --------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class HeldOutProbe:
    """The held-out images every candidate is scored on.

    Attributes:
        images: (P, 3, S, S) ImageNet-normalised, exactly as a monitoring probe set is
            built (:func:`dse_tune.ssl.data.build_probe_set`).
        indices: Dataset indices of the images, in order.
        source: Description of the dataset.
        image_size: S.
        fingerprint: ``"sha256:..."`` of ``images``: equal fingerprints, equal inputs.
        excluded: Images of the dataset left out because a monitoring probe set holds them.
        checked_runs: Runs whose monitoring probe images were excluded.
        unchecked_runs: Runs whose monitoring probe set could not be rebuilt (a warning
            was issued); disjointness from them is not verified.
        from_training_data: True when the images come from a run's training data (not
            from its probe set, but seen in training); None when unknown.
    """

    images: Tensor
    indices: tuple[int, ...]
    source: str
    image_size: int
    fingerprint: str
    excluded: int = 0
    checked_runs: tuple[str, ...] = ()
    unchecked_runs: tuple[str, ...] = ()
    from_training_data: bool | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (everything but the pixels)."""
        return {
            "source": self.source,
            "size": len(self.indices),
            "indices": list(self.indices),
            "image_size": self.image_size,
            "fingerprint": self.fingerprint,
            "excluded_monitoring_images": self.excluded,
            "checked_runs": list(self.checked_runs),
            "unchecked_runs": list(self.unchecked_runs),
            "from_training_data": self.from_training_data,
        }


def image_fingerprint(image: Any) -> str:
    """SHA-256 of a PIL image's mode, size and pixels: equal images, equal fingerprints."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def tensor_fingerprint(tensor: Tensor) -> str:
    contiguous = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(contiguous.shape)}:{contiguous.dtype}:".encode())
    digest.update(contiguous.numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:16]}"


def build_held_out_probe(
    dataset: Any,
    *,
    size: int,
    image_size: int,
    exclude_fingerprints: Iterable[str] = (),
    exclude_indices: Iterable[int] = (),
    checked_runs: Sequence[str] = (),
    unchecked_runs: Sequence[str] = (),
    from_training_data: bool | None = None,
) -> HeldOutProbe:
    """Up to ``size`` images of ``dataset`` outside the excluded ones, evenly spread.

    Indices in ``exclude_indices`` are skipped without being read (the monitoring probe
    of a run trained on this very dataset); every chosen image is also compared by
    content with ``exclude_fingerprints`` (:func:`image_fingerprint`), which catches the
    same image under another index or in another copy of the data. The choice depends
    only on the dataset and the exclusions: the same images, in the same order, for
    every run and every call.

    Raises:
        ValueError: ``size`` < 1, or no image is left.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size (held-out images) must be a positive integer, got {size!r}")
    if not hasattr(dataset, "load_image") or not hasattr(dataset, "__len__"):
        raise TypeError(
            "dataset must have __len__ and load_image(index) -> PIL.Image, got "
            f"{type(dataset).__name__}"
        )
    from dse_tune.ssl.data import build_probe_set, probe_indices

    excluded_fingerprints = set(exclude_fingerprints)
    skipped = set(int(i) for i in exclude_indices)
    available = [i for i in range(len(dataset)) if i not in skipped]
    if not available:
        raise ValueError(
            f"no held-out images: all {len(dataset)} images of {_describe(dataset)} are in a "
            "monitoring probe set; pass data= with other images (e.g. a validation split)"
        )
    # Evenly spread first (CamVid-like folders are sorted by sequence), the rest as spares
    # for images that turn out to be probe images under another index.
    spread = [available[j] for j in probe_indices(len(available), min(size, len(available)))]
    chosen_set = set(spread)
    spares = [i for i in available if i not in chosen_set]
    chosen: list[int] = []
    excluded = len(skipped & set(range(len(dataset))))
    for index in (*spread, *spares):
        if len(chosen) == size:
            break
        if (
            excluded_fingerprints
            and image_fingerprint(dataset.load_image(index)) in excluded_fingerprints
        ):
            excluded += 1
            continue
        chosen.append(index)
    if not chosen:
        raise ValueError(
            f"no held-out images: every image of {_describe(dataset)} is in a monitoring probe "
            "set; pass data= with other images"
        )
    if len(chosen) < size:
        warnings.warn(
            f"only {len(chosen)} held-out images available in {_describe(dataset)} "
            f"(asked for {size})",
            stacklevel=2,
        )
    # build_probe_set over a view of exactly these images: the same resizing, cropping
    # and normalisation as the monitoring probe sets.
    probe = build_probe_set(_Subset(dataset, chosen), size=len(chosen), image_size=image_size)
    return HeldOutProbe(
        images=probe.images,
        indices=tuple(chosen),
        source=_describe(dataset),
        image_size=int(image_size),
        fingerprint=tensor_fingerprint(probe.images),
        excluded=excluded,
        checked_runs=tuple(checked_runs),
        unchecked_runs=tuple(unchecked_runs),
        from_training_data=from_training_data,
    )


class _Subset:
    """The images ``indices`` of ``dataset`` as a dataset (no masks: not needed here)."""

    has_masks = False

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def load_image(self, index: int) -> Any:
        return self.dataset.load_image(self.indices[index])

    def describe(self) -> str:
        return _describe(self.dataset)


def _describe(dataset: Any) -> str:
    describe = getattr(dataset, "describe", None)
    return describe() if callable(describe) else type(dataset).__name__


def _data_spec(config: Mapping[str, Any]) -> tuple | None:
    """What decides a run's images, or None when the config cannot rebuild them."""
    if not all(name in config for name in (*_DATA_FIELDS, "probe_size")):
        return None
    splits = config.get("splits")
    splits = None if splits is None else ((splits,) if isinstance(splits, str) else tuple(splits))
    if str(config["data"]) == "synthetic":
        return ("synthetic", None, int(config["synthetic_size"]), int(config["seed"]))
    # synthetic_size and seed do not change a folder's images.
    return (str(config["data"]), splits, None, None)


def _open(spec: tuple) -> Any:
    from dse_tune.ssl.data import open_dataset

    data, splits, synthetic_size, seed = spec
    if data == "synthetic":
        return open_dataset("synthetic", synthetic_size=synthetic_size, seed=seed)
    return open_dataset(data, splits=splits)


def monitoring_probe_fingerprints(
    config: Mapping[str, Any], dataset: Any | None = None
) -> set[str]:
    """Fingerprints of the images a run's DSE monitor scored (its probe set).

    Rebuilt from the run's config exactly as :func:`dse_tune.ssl.pretrain.pretrain`
    chose them (``probe_indices(len(dataset), probe_size)``); ``dataset`` saves
    reopening it. Raises ValueError when the config cannot tell (no data fields, or
    data that was a dataset object).
    """
    from dse_tune.ssl.data import DatasetError, probe_indices

    spec = _data_spec(config)
    if spec is None:
        raise ValueError(f"the config has no {'/'.join(_DATA_FIELDS)}/probe_size fields")
    try:
        dataset = _open(spec) if dataset is None else dataset
    except (DatasetError, OSError, TypeError) as error:
        raise ValueError(f"cannot open its data {config['data']!r}: {error}") from None
    indices = probe_indices(len(dataset), int(config["probe_size"]))
    return {image_fingerprint(dataset.load_image(i)) for i in indices}


def held_out_probe_for(
    runs: Sequence[RunRecord],
    data: Any = None,
    *,
    splits: str | Sequence[str] | None = None,
    size: int = 64,
    image_size: int | None = None,
) -> HeldOutProbe:
    """The held-out probe of a sweep: one set of images for all of ``runs``.

    ``data=None`` takes the runs' common training data (they must agree) and leaves out
    every run's monitoring probe images; those held-out images were still seen in
    training (``from_training_data``). Runs on synthetic scenes of different seeds get
    a scene family of a seed none of them used. Better, pass images no run trained on: a folder
    (with ``splits``), ``"synthetic"``, or a dataset object with ``load_image`` (e.g.
    :class:`dse_tune.ssl.data.SyntheticScenes` with an unused seed). Either way, images
    of any run's monitoring probe set are excluded by content.
    """
    from dse_tune.ssl.data import probe_indices

    if not runs:
        raise ValueError("no runs to rescore")
    specs: dict[str, tuple | None] = {run.name: _data_spec(run.config) for run in runs}
    sizes = {int(run.config["image_size"]) for run in runs if "image_size" in run.config}
    if image_size is None:
        if len(sizes) != 1:
            found = sorted(sizes) or "none recorded"
            raise ValueError(
                f"runs record different or no image sizes ({found}); pass image_size= (the "
                "held-out images must be the same for every run)"
            )
        image_size = sizes.pop()

    known = {spec for spec in specs.values() if spec is not None}
    from_training: bool | None = None
    if data is None:
        if len(known) > 1 and all(spec[0] == "synthetic" for spec in known):
            # Scene families of several seeds (a seed sweep): a family no run trained on.
            unused_seed = max(spec[3] for spec in known) + 1
            held_out_spec = ("synthetic", None, size, unused_seed)
            from_training = False
        elif len(known) == 1:
            held_out_spec = next(iter(known))
        else:
            described = sorted(str(spec) for spec in known) or "none recorded"
            raise ValueError(
                f"runs trained on different or unknown data ({described}); pass data= to rescore "
                "them all on one held-out set"
            )
        dataset = _open(held_out_spec)
    elif isinstance(data, (str, os.PathLike)):
        synthetic = {spec for spec in known if spec[0] == "synthetic"}
        if str(data) == "synthetic":
            # The runs' own scene family when they share one, else the default family.
            size_seed = next(iter(synthetic))[2:] if len(synthetic) == 1 else (512, 0)
            held_out_spec = ("synthetic", None, *size_seed)
        else:
            split_tuple = (
                None
                if splits is None
                else ((splits,) if isinstance(splits, str) else tuple(splits))
            )
            held_out_spec = (str(data), split_tuple, None, None)
        dataset = _open(held_out_spec)
    else:
        held_out_spec, dataset = None, data

    exclude_indices: set[int] = set()
    fingerprints: set[str] = set()
    checked: list[str] = []
    unchecked: dict[str, str] = {}  # run name -> why its probe set could not be rebuilt
    opened: dict[tuple, Any] = {} if held_out_spec is None else {held_out_spec: dataset}
    for run in runs:
        spec = specs[run.name]
        if spec is None:
            unchecked[run.name] = "its config has no data/probe fields"
            continue
        try:
            if spec not in opened:
                opened[spec] = _open(spec)
            fingerprints |= monitoring_probe_fingerprints(run.config, opened[spec])
        except Exception as error:  # noqa: BLE001 - any failure means "not verified"
            unchecked[run.name] = str(error)
            continue
        checked.append(run.name)
        if spec == held_out_spec:
            exclude_indices |= set(probe_indices(len(dataset), int(run.config["probe_size"])))
    if unchecked:
        names = list(unchecked)
        warnings.warn(
            f"cannot rebuild the monitoring probe set of {len(names)} run(s) "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}; first reason: "
            f"{unchecked[names[0]]}); held-out images are not verified against them",
            stacklevel=2,
        )
    if held_out_spec is not None and held_out_spec in {specs[name] for name in checked}:
        from_training = True  # a run's own training data (minus the probe images)
    return build_held_out_probe(
        dataset,
        size=size,
        image_size=image_size,
        exclude_fingerprints=fingerprints,
        exclude_indices=exclude_indices,
        checked_runs=checked,
        unchecked_runs=unchecked,
        from_training_data=from_training,
    )


# ---------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class RescoredCheckpoint:
    """The held-out scores of one checkpoint (None where not computed or not finite)."""

    run: str
    evaluation: int
    epoch: int | None
    checkpoint: Path
    monitored_dse: float | None
    dse: float | None = None
    components: Mapping[str, float] = field(default_factory=dict)
    rankme: float | None = None
    alpha_req: float | None = None
    alpha_req_r2: float | None = None
    problem: str | None = None
    seconds: float = 0.0

    def score(self, name: str = "dse") -> float | None:
        if name not in SELECTION_SCORES:
            raise ValueError(f"score must be one of {SELECTION_SCORES}, got {name!r}")
        return getattr(self, name)


def rescore_checkpoint(
    checkpoint: str | os.PathLike,
    probe: HeldOutProbe | Tensor,
    *,
    seed: int = 0,
    scores: Sequence[str] = ("dse",),
    dse_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    loader: Callable[[Path], Any] | None = None,
) -> dict[str, Any]:
    """Scores of one checkpoint's dense tokens on the probe images.

    Returns ``{"dse", "inter", "intra_image", "intra_batch", "dim", ["rankme"],
    ["alpha_req", "alpha_req_r2"], "problem"}``; a score that cannot be computed
    (non-finite features, collapsed features, too few tokens) is None with the reason
    in ``problem``. A checkpoint that cannot be loaded raises.

    Args:
        loader: ``path -> model`` (anything :func:`dse_tune.features.dense_tokens`
            reads); default :func:`dse_tune.ssl.methods.load_checkpoint`.
    """
    from dse_tune.features import dense_tokens_batched
    from dse_tune.metrics import alpha_req, dse, rankme

    unknown = sorted(set(scores) - set(SCORES))
    if unknown:
        raise ValueError(f"scores: unknown score(s) {unknown}; known: {SCORES}")
    images = probe.images if isinstance(probe, HeldOutProbe) else probe
    path = Path(checkpoint)
    if loader is None:
        from dse_tune.ssl.methods import load_checkpoint

        model = load_checkpoint(path, map_location=device)
    else:
        model = loader(path)
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    tokens = dense_tokens_batched(model, images.to(device), batch_size=batch_size).float().cpu()
    del model

    result: dict[str, Any] = {"dse": None, **{name: None for name in COMPONENTS}, "problem": None}
    problems = []
    if not bool(torch.isfinite(tokens).all()):
        result["problem"] = "dense features contain NaN or infinite values"
        return result
    try:
        value = dse(tokens, seed=seed, **dict(dse_kwargs or {}))
        result["dse"] = _finite(value.score)
        result.update({name: _finite(getattr(value, name)) for name in COMPONENTS})
    except (ValueError, FloatingPointError) as error:
        problems.append(f"DSE: {error}")
    if "rankme" in scores:
        try:
            result["rankme"] = _finite(rankme(tokens))
        except ValueError as error:
            result["rankme"] = None
            problems.append(f"RankMe: {error}")
    if "alpha_req" in scores:
        try:
            fit = alpha_req(tokens)
            result["alpha_req"], result["alpha_req_r2"] = _finite(fit.alpha), _finite(fit.r2)
        except ValueError as error:
            result["alpha_req"] = result["alpha_req_r2"] = None
            problems.append(f"alpha-ReQ: {error}")
    result["problem"] = "; ".join(problems) or None
    return result


def rescore_runs(
    runs: Iterable[RunRecord],
    probe: HeldOutProbe,
    *,
    window: int = 2,
    top: int | None = 3,
    which: str = "candidates",
    seed: int = 0,
    scores: Sequence[str] = ("dse",),
    dse_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    loader: Callable[[Path], Any] | None = None,
    progress: bool = True,
) -> list[RescoredCheckpoint]:
    """Rescore the candidate checkpoints (``which="candidates"``, the selector's
    :func:`~dse_tune.selection.select_run` with ``window``/``top``) or every checkpoint
    (``which="all"``) of each run on ``probe``, with a progress bar.

    A checkpoint that is missing or cannot be loaded gives a row with ``dse=None`` and
    the reason in ``problem``; the others go on.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    jobs: list[tuple[RunRecord, Evaluation, Path]] = []
    for run in runs:
        if which == "candidates":
            positions = select_run(run, window=window, top=top).candidates
        else:
            positions = range(len(run.evaluations))
        for position in positions:
            evaluation = run.evaluations[position]
            checkpoint = run.checkpoint_path(evaluation)
            if checkpoint is not None:
                jobs.append((run, evaluation, checkpoint))

    from tqdm.auto import tqdm

    rows = []
    for run, evaluation, checkpoint in tqdm(
        jobs, desc="rescoring", unit="ckpt", disable=not progress
    ):
        started = time.perf_counter()
        common = dict(
            run=run.name,
            evaluation=evaluation.index,
            epoch=evaluation.epoch,
            checkpoint=checkpoint,
            monitored_dse=_finite(evaluation.dse),
        )
        if not checkpoint.is_file():
            rows.append(
                RescoredCheckpoint(**common, problem=f"checkpoint {checkpoint} does not exist")
            )
            continue
        try:
            values = rescore_checkpoint(
                checkpoint,
                probe,
                seed=seed,
                scores=scores,
                dse_kwargs=dse_kwargs,
                batch_size=batch_size,
                device=device,
                loader=loader,
            )
        except Exception as error:  # noqa: BLE001 - one bad checkpoint must not stop the sweep
            rows.append(
                RescoredCheckpoint(
                    **common, problem=f"cannot score {checkpoint}: {type(error).__name__}: {error}"
                )
            )
            continue
        rows.append(
            RescoredCheckpoint(
                **common,
                dse=values["dse"],
                components={name: values[name] for name in COMPONENTS if values[name] is not None},
                rankme=values.get("rankme"),
                alpha_req=values.get("alpha_req"),
                alpha_req_r2=values.get("alpha_req_r2"),
                problem=values["problem"],
                seconds=time.perf_counter() - started,
            )
        )
    return rows


def rescored_mapping(rows: Iterable[RescoredCheckpoint], score: str = "dse") -> dict[str, float]:
    """``{checkpoint path: value}`` of the rows with a finite ``score``: the ``rescored``
    argument of :func:`dse_tune.selection.select_best` (``"dse"`` or ``"rankme"``)."""
    if score not in SELECTION_SCORES:
        raise ValueError(
            f"score must be one of {SELECTION_SCORES} (higher is better), got {score!r}"
        )
    mapping = {}
    for row in rows:
        value = row.score(score)
        if value is not None:
            mapping[str(row.checkpoint)] = value
    return mapping


def write_rescored(
    rows: Sequence[RescoredCheckpoint],
    probe: HeldOutProbe,
    path: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``rescored.json`` (the rows) and ``rescored_probe.json`` (the probe and
    ``settings``) into ``path``'s folder, atomically. Returns the rows' file."""
    path = Path(path)
    folder = path.parent
    records = []
    for row in rows:
        records.append(
            {
                "checkpoint": _relative(row.checkpoint, folder),
                "dse": row.dse,
                "run": row.run,
                "evaluation": row.evaluation,
                "epoch": row.epoch,
                "monitored_dse": row.monitored_dse,
                **{name: row.components.get(name) for name in COMPONENTS},
                "rankme": row.rankme,
                "alpha_req": row.alpha_req,
                "alpha_req_r2": row.alpha_req_r2,
                "probe": probe.fingerprint,
                "seed": (settings or {}).get("seed"),
                "seconds": round(row.seconds, 3),
                "problem": row.problem,
            }
        )
    description = {"held_out_probe": probe.describe(), "settings": dict(settings or {})}
    atomic_write_text(path, json.dumps(records, indent=2, allow_nan=False) + "\n")
    probe_path = path.with_name(
        PROBE_FILENAME if path.name == RESCORED_FILENAME else f"{path.stem}_probe.json"
    )
    atomic_write_text(probe_path, json.dumps(description, indent=2, allow_nan=False) + "\n")
    return path


def rescore_sweep(
    root: str | os.PathLike,
    data: Any = None,
    *,
    splits: str | Sequence[str] | None = None,
    probe_size: int = 64,
    image_size: int | None = None,
    seed: int = 0,
    scores: Sequence[str] = ("dse",),
    select_by: str = "dse",
    window: int = 2,
    top: int | None = 3,
    which: str = "candidates",
    dse_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Rescore every run below ``root`` on one held-out probe; write and return the result.

    Args:
        root: A sweep folder (or one run folder), as :func:`dse_tune.selection.load_sweep`
            reads it.
        data, splits: Where the held-out images come from (see :func:`held_out_probe_for`;
            None: the runs' common training data minus every monitoring probe image).
        probe_size: Number of held-out images.
        image_size: Their size (default: the runs' common ``image_size``).
        seed: Seed of DSE's k-means and shuffle, the same for every checkpoint.
        scores: ``"dse"`` plus optionally ``"rankme"``, ``"alpha_req"``.
        select_by: The value returned per checkpoint: ``"dse"`` or ``"rankme"``.
            (``rescored.json`` always holds the held-out DSE under ``"dse"``.)
        window, top, which: Which checkpoints (the selector's candidates by default;
            use the same ``window``/``top`` as in selection).
        dse_kwargs: More :func:`dse_tune.dse` settings (the same for every checkpoint).
        batch_size, device: Feature extraction.
        out: The rows' file (default ``ROOT/rescored.json``); ``rescored_probe.json``
            goes next to it.
        progress: Show a progress bar over checkpoints.

    Returns:
        ``{checkpoint path: held-out value}`` for every candidate that could be scored:
        pass it as ``select_best(runs, rescored=...)``.

    Raises:
        ValueError: No run, no held-out image, or no checkpoint could be scored (the
            message gives the first reason).
    """
    root = Path(root)
    if select_by not in SELECTION_SCORES:
        raise ValueError(
            f"select_by must be one of {SELECTION_SCORES} (higher is better), got {select_by!r}"
        )
    wanted = tuple(dict.fromkeys(("dse", *scores, select_by)))
    unknown = sorted(set(wanted) - set(SCORES))
    if unknown:
        raise ValueError(f"scores: unknown score(s) {unknown}; known: {SCORES}")
    runs = [run for run in load_sweep(root) if run.evaluations]
    if not runs:
        raise ValueError(f"no run with DSE evaluations below {root}")
    probe = held_out_probe_for(runs, data, splits=splits, size=probe_size, image_size=image_size)
    rows = rescore_runs(
        runs,
        probe,
        window=window,
        top=top,
        which=which,
        seed=seed,
        scores=wanted,
        dse_kwargs=dse_kwargs,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    if not rows:
        raise ValueError(f"the runs below {root} have no checkpoint to rescore")
    settings = {
        "seed": seed,
        "scores": list(wanted),
        "select_by": select_by,
        "dse_kwargs": dict(dse_kwargs or {}),
        "window": window,
        "top": top,
        "which": which,
    }
    write_rescored(rows, probe, root / RESCORED_FILENAME if out is None else Path(out), settings)
    mapping = rescored_mapping(rows, select_by)
    if not mapping:
        reasons = [row.problem for row in rows if row.problem] or ["unknown"]
        raise ValueError(
            f"no checkpoint below {root} could be rescored; first reason: {reasons[0]}"
        )
    return mapping


# --------------------------------------------------------------------------- helpers


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _relative(path: Path, folder: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:  # another drive (Windows): keep it absolute
        return str(Path(path).absolute())


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dse-tune rescore`` (also ``python -m dse_tune.rescore``)."""
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", type=Path, help="a sweep folder (or one run folder)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="held-out images: a folder or 'synthetic' (default: the runs' training data minus "
        "every monitoring probe image)",
    )
    parser.add_argument(
        "--splits", nargs="+", default=None, help="split folders of --data (e.g. val)"
    )
    parser.add_argument(
        "--probe-size", type=int, default=64, help="number of held-out images (default: 64)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="default: the runs' image_size"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="DSE seed, the same for every checkpoint"
    )
    parser.add_argument(
        "--scores",
        nargs="+",
        choices=SCORES,
        default=["dse"],
        help="scores to compute (default: dse)",
    )
    parser.add_argument(
        "--window", type=int, default=2, help="candidate window, as in select (default: 2)"
    )
    parser.add_argument(
        "--top", type=int, default=3, help="candidates per run, as in select (default: 3)"
    )
    parser.add_argument(
        "--all", action="store_true", help="rescore every checkpoint, not only candidates"
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for the features (default: cpu)"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: RUN_DIR/rescored.json")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    out = args.out or args.run_dir / RESCORED_FILENAME
    try:
        mapping = rescore_sweep(
            args.run_dir,
            args.data,
            splits=args.splits,
            probe_size=args.probe_size,
            image_size=args.image_size,
            seed=args.seed,
            scores=args.scores,
            window=args.window,
            top=args.top,
            which="all" if args.all else "candidates",
            device=args.device,
            out=out,
            progress=not args.no_progress,
        )
    except (OSError, ValueError, TypeError) as error:
        print(f"dse-tune rescore: error: {error}", file=sys.stderr)
        return 2
    print(f"rescored {len(mapping)} checkpoint(s); wrote {out}")
    print(f"next: dse-tune select {args.run_dir} --rescored {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dse_tune.rescore", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
