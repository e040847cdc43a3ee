"""Which network of a checkpoint to read: one, the paper's, or a refusal that names them.

A checkpoint often holds several networks of the same shapes (student and teacher, online
and momentum encoder). :func:`match_formats` ranks the formats that fit;
:func:`choose_network` then reads the documented default, the network the DSE paper's code
scores, and names the other branches with other weights in a note (``--format dino:student``).
It refuses (:class:`AmbiguousCheckpointError`, naming each ``--format NAME:BRANCH`` or
``--prefix``) when ``auto`` finds another format that fits as well with *different* tensors
(a ReSA file also fits MoCo v3's ``momentum_encoder.``) and no more telltale keys (markers)
for the chosen one, or when a Lightning checkpoint has several attributes that fit with
different weights (``student_backbone.``/``teacher_backbone.``), except in ``dse-tune
pretrain``'s own files, whose ``hyper_parameters`` name the method and so the scored network.
Formats or prefixes that read the same tensors (VICReg and Barlow Twins) go on silently.

Example:
    >>> import torch
    >>> checkpoint = {"state_dict": {"student_backbone.w": torch.zeros(2), "teacher_backbone.w": torch.ones(2)}}
    >>> choose_network(match_formats({"w": (2,)}, checkpoint), checkpoint, {"w": (2,)}, "auto", None)
    Traceback (most recent call last):
    ...
    dse_tune.checkpoints.branches.AmbiguousCheckpointError: the checkpoint holds 2 networks that fit, with different weights; say which one to score: --prefix teacher_backbone. or --prefix student_backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dse_tune.checkpoints.formats import (
    FORMATS,
    CheckpointFormat,
    Extraction,
    container_state,
    extract,
    find_prefixes,
    marker_score,
    resolve_format,
)

#: ``dse-tune pretrain`` runs: the LightningModule attribute whose network DSE scores,
#: by method (``scored_backbone`` of dse_tune/ssl/methods.py; a test keeps them equal).
DSE_TUNE_SCORED = {"dino": "teacher_backbone.", "ibot": "teacher_backbone.", "mae": "backbone.",
                   "mocov3": "momentum_backbone."}


class AmbiguousCheckpointError(ValueError):
    """Several networks with different weights fit; ``choices`` are the options that pick one."""

    def __init__(self, choices: list[str]) -> None:
        self.choices = choices
        super().__init__(
            f"the checkpoint holds {len(choices)} networks that fit, with different weights; "
            f"say which one to score: {' or '.join(choices)}"
        )


@dataclass
class FormatMatch:
    """One format's best layout on one checkpoint: how many model weights it would load."""

    format: CheckpointFormat
    extraction: Extraction
    loadable: int
    markers: float


def _loadable(shapes: Mapping[str, tuple[int, ...]], extraction: Extraction) -> int:
    return sum(shapes.get(key) == tuple(value.shape) for key, value in extraction.state.items())


def match_formats(
    shapes: Mapping[str, tuple[int, ...]],
    checkpoint: Mapping[str, Any],
    format: str = "auto",
    prefix: str | None = None,
) -> list[FormatMatch]:
    """Every candidate format's best layout, best first: most loadable weights, then most
    markers (the method's telltale keys), then the fixed order of :data:`FORMATS`.

    ``format`` is ``"auto"``, a format name or ``"name:branch"``; ``prefix`` overrides
    the layouts' prefixes. Formats whose containers are absent are left out.
    """
    candidates = [(fmt, fmt.layouts) for fmt in FORMATS.values()] if format == "auto" else [resolve_format(format)]
    matches: list[FormatMatch] = []
    for fmt, layouts in candidates:
        best: FormatMatch | None = None
        for layout in layouts:
            extraction = extract(checkpoint, layout, shapes, prefix)
            if extraction is None:
                continue
            loadable = _loadable(shapes, extraction)
            if best is None or loadable > best.loadable:
                best = FormatMatch(fmt, extraction, loadable, 0.0)
        if best is not None:
            best.markers = marker_score(fmt, checkpoint, best.extraction) if format == "auto" else 0.0
            matches.append(best)
    order = {name: i for i, name in enumerate(FORMATS)}
    matches.sort(key=lambda m: (-m.loadable, -m.markers, order[m.format.name]))
    return matches


def same_tensors(first: Extraction, second: Extraction, shapes: Mapping[str, tuple[int, ...]]) -> bool:
    """Whether two extractions give the model the same weights."""
    keys = [key for key in shapes if key in first.state or key in second.state]
    return all(key in first.state and key in second.state and first.state[key].shape == second.state[key].shape
               and torch.equal(first.state[key], second.state[key]) for key in keys)


def choose_network(
    matches: list[FormatMatch], checkpoint: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
    format: str, prefix: str | None,
) -> tuple[FormatMatch, list[str]]:
    """The match to load and notes for the report (see the module docstring).

    Raises:
        AmbiguousCheckpointError: two networks with different weights and no default.
    """
    best, notes = matches[0], []
    if prefix is not None:  # the user said where the backbone is
        return best, notes
    if best.extraction.layout.prefix is None:
        best, notes = _lightning_choice(best, checkpoint, shapes)
    if format == "auto":
        rivals = [m for m in matches[1:] if m.loadable == best.loadable
                  and not same_tensors(m.extraction, best.extraction, shapes)]
        if rivals and any(m.markers >= best.markers for m in rivals):
            raise AmbiguousCheckpointError(_choices([best, *rivals]))
        if rivals:
            notes.append(f"the layout's default; also fits {', '.join(_choices(rivals))} (other weights)")
    if ":" not in format:
        others = _other_branches(best, checkpoint, shapes)
        if others:
            notes.append(f"default branch {best.extraction.branch} (the DSE paper's); the file also holds "
                         f"{', '.join(others)} (other weights)")
    return best, notes


def _choices(matches: list[FormatMatch]) -> list[str]:
    return list(dict.fromkeys(f"--format {m.format.name}:{m.extraction.branch}" for m in matches))


def _other_branches(best: FormatMatch, checkpoint: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    others = []
    for layout in best.format.layouts:
        if layout.branch == best.extraction.branch or layout.prefix is None:
            continue
        extraction = extract(checkpoint, layout, shapes)
        if extraction is not None and _loadable(shapes, extraction) == best.loadable \
                and not same_tensors(extraction, best.extraction, shapes):
            others.append(f"--format {best.format.name}:{layout.branch}")
    return list(dict.fromkeys(others))


def _lightning_choice(
    best: FormatMatch, checkpoint: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[FormatMatch, list[str]]:
    """Among the tied prefixes of a Lightning checkpoint: one network, or a refusal."""
    layout = best.extraction.layout
    state = container_state(checkpoint, layout.container) or {}
    tied = find_prefixes(state, shapes)
    distinct: list[FormatMatch] = []
    for found in tied:
        extraction = extract(checkpoint, layout, shapes, found)
        if extraction is not None and not any(same_tensors(extraction, m.extraction, shapes) for m in distinct):
            distinct.append(FormatMatch(best.format, extraction, _loadable(shapes, extraction), best.markers))
    if len(distinct) <= 1:
        return best, []
    scored = dse_tune_scored_prefix(checkpoint)
    own = [m for m in distinct if scored is not None and m.extraction.prefix.startswith(scored)]
    if own:
        return own[0], [f"the network a dse-tune pretrain run scores ({own[0].extraction.prefix})"]
    raise AmbiguousCheckpointError([f"--prefix {m.extraction.prefix}" for m in distinct])


def dse_tune_scored_prefix(checkpoint: Mapping[str, Any]) -> str | None:
    """The scored network's attribute prefix in a ``dse-tune pretrain`` checkpoint; None in others."""
    hyper = checkpoint.get("hyper_parameters")
    config = hyper.get("config") if isinstance(hyper, Mapping) else None
    return DSE_TUNE_SCORED.get(config.get("method")) if isinstance(config, Mapping) else None
