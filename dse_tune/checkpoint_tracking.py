"""Tracking checkpoints that other code wrote: score each once, keep a run folder.

:class:`CheckpointTracker` reads a run's checkpoint files (any format of
:mod:`dse_tune.checkpoints`) into one architecture and scores a fixed probe set with a
:class:`~dse_tune.tracker.DSETracker` (as a monitored run), into a run folder that
``dse-tune select`` and ``validate`` read unchanged. :func:`track_checkpoints` scores
what is there, once; :func:`watch_checkpoints` keeps polling a live training folder.
Re-running on the same folder scores only checkpoints the history lacks.

Besides the run folder's own files (``docs/run-folder.md``) a tracked run holds:

- ``config.json``: the probe set (``data``, ``splits``, ``probe_size``, ``image_size``,
  ``probe_seed``, ``synthetic_size``, ``seed``: the keys of a ``dse-tune pretrain`` run, so
  the same probe can be rebuilt) and ``"tracked"``: how the files are read (arch,
  arch_kwargs, the format found, prefix, allow_missing, layer, trust);
- :data:`TRACKING_FILE`: the run-standardised DSE and the candidates (the paper's rule);
- :data:`LAYERS_FILE` (``layer="all"``): the DSE of every block of every checkpoint.

Example:
    >>> import os, tempfile, torch
    >>> from dse_tune.checkpoints import build_architecture
    >>> folder, run = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> kwargs = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    >>> for epoch in (0, 1, 2):
    ...     _ = torch.manual_seed(epoch)
    ...     weights = build_architecture("vit_tiny_patch16_224", kwargs).state_dict()
    ...     torch.save({"model": weights, "epoch": epoch}, os.path.join(folder, f"checkpoint-{epoch}.pth"))
    >>> read = ReadSettings("vit_tiny_patch16_224", kwargs)
    >>> probe = ProbeSettings(probe_size=16, synthetic_size=16)
    >>> result = track_checkpoints(folder, run, read, probe, progress=False)
    >>> [e.epoch for e in result.run.evaluations], result.format
    ([0, 1, 2], 'state_dict:model')
    >>> len(track_checkpoints(folder, run, read, probe, progress=False).scored)  # nothing new
    0
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dse_tune.atomic import atomic_write_json
from dse_tune.checkpoints import (
    NOT_FITTING, CheckpointReadError, NoCheckpointsError, UntrustedCheckpointError, build_architecture,
    collect_checkpoints, dense_tokens_at, layer_name, load_backbone, num_layers, order_checkpoints, read_checkpoint,
)
from dse_tune.checkpoints.layers import resolve_layer
from dse_tune.checkpoints.tracked_run import (
    TRACKED_KEY, ProbeSettings, ReadSettings, checkpoint_bar, model_loader_for_run,
)
from dse_tune.decision import CANDIDATE_TOP, CANDIDATE_WINDOW
from dse_tune.degradation import DegradationRule, decide_with, finite_or_none
from dse_tune.metrics import standardize_dse
from dse_tune.runs import (
    COMPONENTS, CONFIG_FILE, Evaluation, RunRecord, history_file, read_config, read_json_object, read_run, write_config,
)
from dse_tune.selection import select_run
from dse_tune.tracker import DSETracker

__all__ = [
    "LAYERS_FILE",
    "TRACKING_FILE",
    "CheckpointTracker",
    "ProbeSettings",
    "ReadSettings",
    "TrackResult",
    "model_loader_for_run",
    "track_checkpoints",
    "watch_checkpoints",
]

TRACKING_FILE = "tracking.json"
LAYERS_FILE = "layers.json"
#: ``failure`` texts of an evaluation whose file could not be read, or does not fit the
#: architecture (not a DSE failure: the degradation rule skips it).
UNREADABLE = "unreadable checkpoint"
MISFIT = "does not fit the architecture"


@dataclass
class TrackResult:
    """What a tracking pass did: the run, what it scored now, the run-level results."""

    run: RunRecord
    scored: list[Evaluation]
    format: str | None
    load_summary: str | None
    standardized: list[float | None]
    candidates: list[int]
    alerts: list[str]
    layers: dict[str, Any] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[Evaluation]:
        """The files of this pass that could not be scored (unreadable, or not fitting)."""
        return [e for e in self.scored if (e.failure or "").startswith((UNREADABLE, MISFIT))]


class _SkipUnreadable:
    """A degradation rule that ignores evaluations of unreadable files (a broken file
    says nothing about the features), keeping indices of the full history."""

    def __init__(self, rule: Any, unreadable: Callable[[], set[int]]) -> None:
        self.rule, self.unreadable = rule, unreadable

    def decide(self, values: Sequence[float], *, noise: Sequence | None = None, first_untrained: bool = False) -> Any:
        skip = self.unreadable()
        kept = [i for i in range(len(values)) if i not in skip]
        kept_noise = None if noise is None else [noise[i] for i in kept]
        decision = decide_with(self.rule, [values[i] for i in kept], noise=kept_noise,
                               first_untrained=first_untrained and 0 in kept)
        index = None if decision.peak_index is None else kept[decision.peak_index]
        return dataclasses.replace(decision, peak_index=index, evaluations=len(values))


class CheckpointTracker:
    """Score a run's checkpoint files into a run folder, each file once.

    Args:
        run_dir: the run folder (created; an existing tracked run is continued, and
            must have been tracked with the same architecture, layer and probe set).
        read, probe: see :class:`ReadSettings`, :class:`ProbeSettings`.
        rule: the degradation rule (default ``DegradationRule()``); when it says stop,
            ``alert`` is called once with one line.
        device: where the model runs; batch_size: probe images per forward pass.
        warn, alert: called with one line (default: print to stderr / stdout).
        checkpoints: the CHECKPOINTS argument, recorded in config.json.

    Raises:
        ArchitectureError, DatasetError, ValueError: bad settings, found before scoring.
    """

    def __init__(
        self,
        run_dir: str | Path,
        read: ReadSettings,
        probe: ProbeSettings = ProbeSettings(),
        *,
        rule: Any | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        warn: Callable[[str], None] | None = None,
        alert: Callable[[str], None] | None = None,
        checkpoints: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr))
        self.alert = alert or print
        self.device = device
        recorded = read_config(self.run_dir) if (self.run_dir / CONFIG_FILE).is_file() else {}
        self.read = _continue_settings(recorded, read, probe, self.run_dir)
        self.model = build_architecture(self.read.arch, self.read.arch_kwargs).to(device)
        if self.read.layer != "all":
            _check_layer(self.model, self.read.history_layer)
        # With the final norm, the last block's tokens are the "last+norm" column already.
        last_is_normed = self.read.layer_norm and hasattr(self.model, "blocks")
        self.layer_count = num_layers(self.model) - last_is_normed if self.read.layer == "all" else 0
        self.probe = dataclasses.replace(probe, image_size=probe.image_size or _input_size(self.model, self.read))
        self.probe_images = self.probe.build(self.probe.image_size).images
        self.config = {**self.probe.to_config(), TRACKED_KEY: {**self.read.to_config(), "checkpoints": checkpoints}}
        self.format, self.load_summary = recorded.get(TRACKED_KEY, {}).get("format_found"), None
        self.tracker = DSETracker(
            self.probe_images,
            run_dir=self.run_dir,
            rule=_SkipUnreadable(rule or DegradationRule(), self._unreadable_indices),
            seed=self.probe.probe_seed,
            tokens_fn=lambda model, images: self._tokens(model, images, self.read.history_layer),
            batch_size=batch_size,
            config=self.config,
            plot=True,
            warn=self.warn,
        )
        if history_file(self.run_dir).is_file():
            self.tracker.restore(read_run(self.run_dir).to_dict())
        self.alerts: list[str] = []
        self._alerted = self.tracker.stopped
        self.tracker.add_listener(self._on_evaluation)
        self.layers = _read_layers(self.run_dir) if self.read.layer == "all" else None

    # ------------------------------------------------------------------ files

    def done(self) -> set[Path]:
        """The files the history already holds (resolved paths)."""
        run = self.tracker.run
        return {run.checkpoint_path(e).resolve() for e in run.evaluations if e.checkpoint is not None}

    def pending(self, spec: str | Path, epoch_regex: str | None = None) -> tuple[list[Any], list[tuple[str, str]]]:
        """Ordered checkpoint files of ``spec`` not yet in the history, and the files
        left out with the reason (unnumbered "latest" copies)."""
        order = order_checkpoints(collect_checkpoints(spec), regex=epoch_regex)
        if not list(order) and order.unnumbered:  # nothing would be scored: say why instead of exit 0
            names = ", ".join(p.name for p in order.unnumbered[:3]) + (" ..." if len(order.unnumbered) > 3 else "")
            raise NoCheckpointsError(
                f"no checkpoint in {spec} has an epoch or step ({names}: none in the name or the stored fields); "
                "rename them (e.g. checkpoint0010.pth) or pass --epoch-regex"
            )
        skipped = [(str(p), "no epoch or step in the name (a 'latest' copy)") for p in order.unnumbered]
        skipped += [(str(p), reason) for p, reason in order.copies]
        done = self.done()
        return [item for item in order if item.path.resolve() not in done], skipped

    def score_file(self, item: Any) -> Evaluation:
        """Load one ordered checkpoint and score it. A file that cannot be read or does not
        fit is recorded as failed, with a warning; one that needs ``trust`` or holds several
        networks without a default raises (every file of a run shares that)."""
        checkpoint = _recorded_path(item.path, self.run_dir)
        try:
            report = self._load(item.path)
        except UntrustedCheckpointError:
            raise
        except (CheckpointReadError, *NOT_FITTING) as error:
            kind = UNREADABLE if isinstance(error, CheckpointReadError) else MISFIT
            failure = f"{kind}: {getattr(error, 'cause', error)}"
            self.warn(f"skipped {item.path}: {failure}")
            evaluation = Evaluation(len(self.tracker.evaluations), math.nan, item.epoch, item.step, checkpoint, 0.0,
                                    failure=failure)
            self.tracker.record(evaluation)
            return evaluation
        epoch = item.epoch if item.epoch is not None else report.position.epoch
        step = item.step if item.step is not None else report.position.step
        self.tracker.evaluate(self.model, epoch=epoch, global_step=step, checkpoint=checkpoint)
        evaluation = self.tracker.evaluations[-1]
        if self.read.layer == "all":
            self._score_layers(evaluation)
        return evaluation

    def _load(self, path: Path) -> Any:
        spec = self.format or self.read.format
        report = load_backbone(self.model, path, spec, allow_missing=self.read.allow_missing,
                               allow_extra=self.read.allow_extra, prefix=self.read.prefix, trust=self.read.trust)
        if self.format is None:  # read every later file the way the first one matched
            for line in report.warnings:
                self.warn(line)
            self.format, self.load_summary = report.spec, report.summary()
            self.read = dataclasses.replace(self.read, prefix=report.prefix)
            self.config[TRACKED_KEY].update(prefix=report.prefix, format_found=report.spec)
            self.tracker.run = dataclasses.replace(self.tracker.run, config=self.config)
        return report

    # ---------------------------------------------------------------- scoring

    def _tokens(self, model: Any, images: Any, layer: int) -> Any:
        return dense_tokens_at(model, images, layer, norm=self.read.layer_norm)

    def _score_layers(self, evaluation: Evaluation) -> None:
        row = {"index": evaluation.index, "epoch": evaluation.epoch, "checkpoint": evaluation.checkpoint, "dse": []}
        for layer in range(self.layer_count):
            self.tracker.tokens_fn = lambda model, images, layer=layer: self._tokens(model, images, layer)
            try:
                row["dse"].append(finite_or_none(self.tracker.score(self.tracker.compute_tokens(self.model)).score))
            finally:
                self.tracker.tokens_fn = lambda model, images: self._tokens(model, images, -1)
        row["dse"].append(finite_or_none(evaluation.dse))
        names = [layer_name(self.model, i, self.read.layer_norm) for i in range(self.layer_count)]
        names.append(layer_name(self.model, -1))
        scores = [(value, i) for i, value in enumerate(row["dse"]) if value is not None]
        row["best_layer"] = names[max(scores)[1]] if scores else None
        self.layers = {"layers": names, "checkpoints": [*(self.layers or {}).get("checkpoints", []), row]}

    def _unreadable_indices(self) -> set[int]:
        tracker = getattr(self, "tracker", None)  # None while the DSETracker is being built
        evaluations = () if tracker is None else tracker.evaluations
        return {e.index for e in evaluations if (e.failure or "").startswith((UNREADABLE, MISFIT))}

    def _on_evaluation(self, evaluation: Evaluation, decision: Any) -> None:
        if decision.stop and not self._alerted:
            self._alerted = True
            best = self.tracker.run.evaluations[decision.peak_index] if decision.peak_index is not None else None
            peak = f"; peak at epoch {best.epoch} ({best.checkpoint})" if best is not None else ""
            line = f"ALERT: DSE degraded at epoch {evaluation.epoch} ({evaluation.checkpoint}): {decision.reason}{peak}"
            self.alerts.append(line)
            self.alert(line)

    # ----------------------------------------------------------------- finish

    def finish(self, scored: list[Evaluation], skipped: list[tuple[str, str]] | None = None) -> TrackResult:
        """Write config.json, the standardised DSE, candidates, layers and the plot."""
        run = self.tracker.run
        write_config(self.run_dir, self.config)
        standardized, scales = _standardized(run)
        chosen = select_run(run, CANDIDATE_WINDOW, CANDIDATE_TOP)  # what `dse-tune select` finds
        candidates = list(chosen.candidates)
        summary = {
            "format": self.format,
            "load": self.load_summary,
            "dse_standardized": standardized,
            "standardization": scales,
            "candidates": candidates,
            "chosen": chosen.chosen_index,
            "candidate_rule": {"window": CANDIDATE_WINDOW, "top": CANDIDATE_TOP},
            "alerts": self.alerts,
        }
        atomic_write_json(self.run_dir / TRACKING_FILE, summary)
        if self.layers is not None:
            atomic_write_json(self.run_dir / LAYERS_FILE, self.layers)
        self.tracker.write_plot()
        return TrackResult(run, scored, self.format, self.load_summary, standardized, candidates, list(self.alerts),
                           self.layers, list(skipped or []))


def track_checkpoints(
    checkpoints: str | Path,
    run_dir: str | Path,
    read: ReadSettings,
    probe: ProbeSettings = ProbeSettings(),
    *,
    epoch_regex: str | None = None,
    progress: bool = True,
    **options: Any,
) -> TrackResult:
    """Score every checkpoint of ``checkpoints`` (a folder, glob or list file) that the
    run folder's history lacks, in training order; see :class:`CheckpointTracker` for
    ``options``. Raises ``NoCheckpointsError`` when there are none."""
    collect_checkpoints(checkpoints)  # no checkpoints: fail before building anything
    tracker = CheckpointTracker(run_dir, read, probe, checkpoints=str(checkpoints), **options)
    pending, skipped = tracker.pending(checkpoints, epoch_regex)
    for reason in skipped:
        tracker.warn(f"left out {reason[0]}: {reason[1]}")
    scored = [tracker.score_file(item) for item in checkpoint_bar(pending, "tracking", progress)]
    return tracker.finish(scored, skipped)


def watch_checkpoints(
    checkpoints: str | Path,
    run_dir: str | Path,
    read: ReadSettings,
    probe: ProbeSettings = ProbeSettings(),
    *,
    interval: float = 30.0,
    timeout: float | None = None,
    max_checkpoints: int | None = None,
    epoch_regex: str | None = None,
    on_scored: Callable[[Evaluation], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **options: Any,
) -> TrackResult:
    """Poll ``checkpoints`` every ``interval`` seconds; score each new file once, when
    it has stopped changing (same size and mtime on two polls) and reads; alert once
    when the DSE curve degrades. Ends after ``timeout`` seconds or ``max_checkpoints``
    new files; Ctrl-C ends it too (the run folder is written after each checkpoint).
    """
    tracker = CheckpointTracker(run_dir, read, probe, checkpoints=str(checkpoints), **options)
    started, scored, seen, waiting = time.monotonic(), [], {}, set()
    try:
        while True:
            try:
                pending, _ = tracker.pending(checkpoints, epoch_regex)
            except NoCheckpointsError:
                pending = []
            for item in pending:
                stat = _stat(item.path)
                if stat is None or seen.get(item.path) != stat:
                    seen[item.path] = stat  # new or still growing: look again next poll
                    continue
                try:
                    read_checkpoint(item.path, trust=tracker.read.trust)
                except UntrustedCheckpointError:
                    raise
                except CheckpointReadError as error:
                    if item.path not in waiting:
                        waiting.add(item.path)
                        tracker.warn(f"waiting for {item.path}: {error.cause}")
                    seen[item.path] = None  # retry once it changes and settles again
                    continue
                waiting.discard(item.path)
                scored.append(tracker.score_file(item))
                if on_scored is not None:
                    on_scored(scored[-1])
                if max_checkpoints is not None and len(scored) >= max_checkpoints:
                    return tracker.finish(scored)
            if timeout is not None and time.monotonic() - started >= timeout:
                return tracker.finish(scored)
            sleep(interval)
    except KeyboardInterrupt:
        tracker.finish(scored)
        raise


def _continue_settings(recorded: Mapping[str, Any], read: ReadSettings, probe: ProbeSettings, run_dir: Path) -> ReadSettings:
    """``read``, pinned to the format a previous pass found; a run tracked with other
    settings is refused (its values would not be comparable)."""
    tracked = recorded.get(TRACKED_KEY)
    if not recorded:
        return read
    if not isinstance(tracked, Mapping):
        raise ValueError(f"{run_dir} is a run folder not written by 'dse-tune track'; give another --out folder")
    recorded_probe = ProbeSettings.from_config(recorded)
    if probe.image_size is None:
        probe = dataclasses.replace(probe, image_size=recorded_probe.image_size)
    mine = {**_compared(read), **probe.to_config()}
    theirs = {**_compared(ReadSettings.from_config(tracked)), **recorded_probe.to_config()}
    differ = [f"{key} {theirs[key]!r} (now {mine[key]!r})" for key in mine if mine[key] != theirs[key]]
    if differ:
        raise ValueError(
            f"{run_dir} was tracked with other settings: {'; '.join(differ)}. Scores would not be comparable: "
            "use the same settings or another --out folder"
        )
    found = tracked.get("format_found")
    return dataclasses.replace(read, format=found or read.format, prefix=tracked.get("prefix", read.prefix))


def _compared(read: ReadSettings) -> dict[str, Any]:
    # Layer -1 always has the final norm: its layer_norm setting changes nothing.
    return {"arch": read.arch, "arch_kwargs": dict(read.arch_kwargs), "layer": read.layer,
            "layer_norm": read.layer_norm if read.layer != -1 else None}


def _check_layer(model: Any, layer: int) -> None:
    try:
        resolve_layer(model, layer)
    except TypeError as error:
        raise ValueError(str(error)) from error


def _input_size(model: Any, read: ReadSettings) -> int:
    """The architecture's input side: ``img_size`` of the kwargs, else its default."""
    size = read.arch_kwargs.get("img_size")
    if isinstance(size, int):
        return size
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return int(config.get("input_size", (3, 224, 224))[-1])


def _recorded_path(path: Path, run_dir: Path) -> str:
    """Relative to the run folder when inside it (the folder can move), else absolute."""
    absolute, folder = path.resolve(), run_dir.resolve()
    return str(absolute.relative_to(folder)) if absolute.is_relative_to(folder) else str(absolute)


def _standardized(run: RunRecord) -> tuple[list[float | None], dict[str, Any] | None]:
    """The run-standardised DSE over the evaluations with finite components (None elsewhere)."""
    usable = [e for e in run.evaluations if all(math.isfinite(e.components.get(c, math.nan)) for c in COMPONENTS)]
    values: list[float | None] = [None] * len(run.evaluations)
    if not usable:
        return values, None
    result = standardize_dse([dict(e.components) for e in usable])
    for evaluation, value in zip(usable, result.standardized, strict=True):
        values[run.evaluations.index(evaluation)] = value
    return values, {"lam": result.lam, "class_relevance_std": result.class_relevance_std, "dim_std": result.dim_std}


def _read_layers(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / LAYERS_FILE
    return read_json_object(path) if path.is_file() else None


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
