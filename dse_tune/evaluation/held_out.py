"""The held-out set: the one set of images every candidate checkpoint of a sweep is rescored on.

A run's DSE monitor scores its *probe set* (``probe_size`` images of its training data,
:func:`dse_tune.data.build_probe_set`). Rescoring (:mod:`dse_tune.evaluation.rescore`)
needs images that no run's probe set holds, the same for every run, in the same order:
the held-out set. It is built exactly like a probe set (resize, centre crop,
normalisation), and every image of any run's probe set is excluded, by index and by
content (:func:`image_fingerprint`), so a copy of the data under other indices is caught.

Example:
    >>> from dse_tune.data import SyntheticScenes
    >>> scenes = SyntheticScenes(num_images=8, image_size=32)
    >>> held_out = build_held_out_set(scenes, size=4, image_size=32, exclude_indices=[0, 2])
    >>> held_out.indices, tuple(held_out.images.shape), held_out.fingerprint.startswith("sha256:")
    ((1, 3, 5, 6), (4, 3, 32, 32), True)
    >>> build_held_out_set(scenes, size=2, image_size="24x32").image_size  # HxW or "native" too
    (24, 32)
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dse_tune.evaluation.labelled_data import ImageSubset, describe_dataset
from dse_tune.runs import RunRecord

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "HeldOutSet",
    "build_held_out_set",
    "held_out_set_for",
    "image_fingerprint",
    "monitoring_probe_fingerprints",
    "tensor_fingerprint",
]

# The PretrainConfig fields that decide which images a run trained and monitored on.
_DATA_FIELDS = ("data", "splits", "synthetic_size", "seed")
#: Scene family used for ``data="synthetic"`` when the runs share none: (size, seed).
_DEFAULT_SYNTHETIC = (512, 0)


@dataclass(frozen=True)
class HeldOutSet:
    """The held-out images every candidate is scored on.

    Attributes:
        images: (P, 3, H, W), built as a monitoring probe set (:func:`dse_tune.data.build_probe_set`).
        indices: Dataset indices of the images, in order; ``source``: the dataset.
        image_size: (H, W), the size the images were scored at (also for ``"native"``).
        fingerprint: ``"sha256:..."`` of ``images``: equal fingerprints, equal inputs.
        excluded: Images of the dataset left out because a monitoring probe set holds them.
        checked_runs: Runs whose monitoring probe set images were excluded.
        unchecked_runs: Runs whose probe set could not be rebuilt (warned; not verified).
        from_training_data: True when the images come from a run's training data (not
            from its probe set, but seen in training); None when unknown.
    """

    images: Tensor
    indices: tuple[int, ...]
    source: str
    image_size: tuple[int, int]
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
            "image_size": list(self.image_size),
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
    """``"sha256:"`` and 16 hex digits of a tensor's shape, dtype and values.

    Example:
        >>> import torch
        >>> tensor_fingerprint(torch.zeros(2)) == tensor_fingerprint(torch.zeros(2))
        True
    """
    contiguous = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(contiguous.shape)}:{contiguous.dtype}:".encode())
    digest.update(contiguous.numpy().tobytes())
    return f"sha256:{digest.hexdigest()[:16]}"


def _choose_images(
    dataset: Any, size: int, exclude_fingerprints: set[str], skipped: set[int]
) -> tuple[list[int], int]:
    """Up to ``size`` indices outside the exclusions, evenly spread; and how many were excluded."""
    from dse_tune.data import probe_indices

    available = [i for i in range(len(dataset)) if i not in skipped]
    if not available:
        raise ValueError(
            f"no held-out images: all {len(dataset)} images of {describe_dataset(dataset)} are in a "
            "monitoring probe set; pass data= with other images (e.g. a validation split)"
        )
    # Evenly spread first (CamVid-like folders are sorted by sequence), the rest as spares
    # for images that turn out to be probe set images under another index.
    spread = [available[j] for j in probe_indices(len(available), min(size, len(available)))]
    spares = sorted(set(available) - set(spread))
    chosen: list[int] = []
    excluded = len(skipped & set(range(len(dataset))))
    for index in (*spread, *spares):
        if len(chosen) == size:
            break
        if exclude_fingerprints and image_fingerprint(dataset.load_image(index)) in exclude_fingerprints:
            excluded += 1
            continue
        chosen.append(index)
    return chosen, excluded


def build_held_out_set(
    dataset: Any,
    *,
    size: int,
    image_size: Any,
    exclude_fingerprints: Iterable[str] = (),
    exclude_indices: Iterable[int] = (),
    checked_runs: Sequence[str] = (),
    unchecked_runs: Sequence[str] = (),
    from_training_data: bool | None = None,
) -> HeldOutSet:
    """Up to ``size`` images of ``dataset`` outside the excluded ones, evenly spread: the
    same images, in the same order, for every run and every call.

    ``exclude_indices`` are skipped unread (the probe set of a run trained on this very
    dataset); every chosen image is also compared by content with ``exclude_fingerprints``
    (:func:`image_fingerprint`: the same image under another index or in a copy of the
    data). ``image_size`` as in :func:`dse_tune.data.build_probe_set`. Raises ValueError
    when ``size`` < 1 or no image is left.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size (held-out images) must be a positive integer, got {size!r}")
    if not hasattr(dataset, "load_image") or not hasattr(dataset, "__len__"):
        raise TypeError(
            "dataset must have __len__ and load_image(index) -> PIL.Image, got "
            f"{type(dataset).__name__}"
        )
    from dse_tune.data import build_probe_set

    skipped = {int(i) for i in exclude_indices}
    chosen, excluded = _choose_images(dataset, size, set(exclude_fingerprints), skipped)
    if not chosen:
        raise ValueError(
            f"no held-out images: every image of {describe_dataset(dataset)} is in a monitoring probe "
            "set; pass data= with other images"
        )
    if len(chosen) < size:
        warnings.warn(
            f"only {len(chosen)} held-out images available in {describe_dataset(dataset)} "
            f"(asked for {size})",
            stacklevel=2,
        )
    # build_probe_set over a view of exactly these images: the same resizing, cropping
    # and normalisation as the monitoring probe sets.
    subset = ImageSubset(dataset, chosen, masks=False, description=describe_dataset(dataset))
    probe = build_probe_set(subset, size=len(chosen), image_size=image_size)
    return HeldOutSet(
        images=probe.images,
        indices=tuple(chosen),
        source=describe_dataset(dataset),
        image_size=probe.image_size,
        fingerprint=tensor_fingerprint(probe.images),
        excluded=excluded,
        checked_runs=tuple(checked_runs),
        unchecked_runs=tuple(unchecked_runs),
        from_training_data=from_training_data,
    )


def _as_splits(splits: Any) -> tuple | None:
    return None if splits is None else ((splits,) if isinstance(splits, str) else tuple(splits))


def _data_spec(config: Mapping[str, Any]) -> tuple | None:
    """What decides a run's images, or None when the config cannot rebuild them."""
    if not all(name in config for name in (*_DATA_FIELDS, "probe_size")):
        return None
    if str(config["data"]) == "synthetic":
        return ("synthetic", None, int(config["synthetic_size"]), int(config["seed"]))
    # synthetic_size and seed do not change a folder's images.
    return (str(config["data"]), _as_splits(config.get("splits")), None, None)


def _open(spec: tuple) -> Any:
    from dse_tune.data import dataset_for

    return dataset_for(dict(zip(_DATA_FIELDS, spec)))  # spec: the values of _DATA_FIELDS, in order


def monitoring_probe_fingerprints(config: Mapping[str, Any], dataset: Any | None = None) -> set[str]:
    """Fingerprints of the images a run's DSE monitor scored (its probe set), chosen from
    its config as pretraining chose them (``probe_indices(len(dataset), probe_size)``;
    ``dataset`` saves reopening it). Raises ValueError when the config cannot tell (no
    data fields, or data that was a dataset object).
    """
    from dse_tune.data import DatasetError, probe_indices

    spec = _data_spec(config)
    if spec is None:
        raise ValueError(f"the config has no {'/'.join(_DATA_FIELDS)}/probe_size fields")
    try:
        dataset = _open(spec) if dataset is None else dataset
    except (DatasetError, OSError, TypeError) as error:
        raise ValueError(f"cannot open its data {config['data']!r}: {error}") from None
    indices = probe_indices(len(dataset), int(config["probe_size"]))
    return {image_fingerprint(dataset.load_image(i)) for i in indices}


def _common_image_size(runs: Sequence[RunRecord]) -> tuple[int, int] | str:
    """The runs' common probe image size (``probe_image_size``, else ``image_size``)."""
    from dse_tune.data import probe_image_size

    sizes = set()
    for run in runs:
        try:
            sizes.add(probe_image_size(run.config))
        except ValueError:
            continue
    if len(sizes) != 1:
        found = sorted(size if isinstance(size, str) else f"{size[0]}x{size[1]}" for size in sizes)
        raise ValueError(
            f"runs record different or no image sizes ({', '.join(found) or 'none recorded'}); pass "
            "image_size= (the held-out images must be the same for every run)"
        )
    return sizes.pop()


def _source_spec(known: set[tuple], data: Any, splits: Any, size: int) -> tuple[tuple, bool | None]:
    """Which images the held-out set comes from, for ``data`` a path, ``"synthetic"`` or
    None (the runs' own data); and whether they are known to be outside any run's training data."""
    if data is None:
        if len(known) > 1 and all(spec[0] == "synthetic" for spec in known):
            # Scene families of several seeds (a seed sweep): a family no run trained on.
            unused_seed = max(spec[3] for spec in known) + 1
            return ("synthetic", None, size, unused_seed), False
        if len(known) == 1:
            return next(iter(known)), None
        described = sorted(str(spec) for spec in known) or "none recorded"
        raise ValueError(
            f"runs trained on different or unknown data ({described}); pass data= to rescore "
            "them all on one held-out set"
        )
    if str(data) == "synthetic":
        synthetic = {spec for spec in known if spec[0] == "synthetic"}
        # The runs' own scene family when they share one, else the default family.
        size_seed = next(iter(synthetic))[2:] if len(synthetic) == 1 else _DEFAULT_SYNTHETIC
        return ("synthetic", None, *size_seed), None
    return (str(data), _as_splits(splits), None, None), None


def _probe_set_exclusions(
    runs: Sequence[RunRecord], specs: Mapping[str, tuple | None], held_out_spec: tuple | None, dataset: Any
) -> tuple[set[int], set[str], list[str], dict[str, str]]:
    """Indices (in ``dataset``) and fingerprints of every run's monitoring probe set; the
    runs checked, and the runs whose probe set could not be rebuilt (name -> why)."""
    from dse_tune.data import probe_indices

    exclude_indices: set[int] = set()
    fingerprints: set[str] = set()
    checked: list[str] = []
    unchecked: dict[str, str] = {}
    opened: dict[tuple, Any] = {} if held_out_spec is None else {held_out_spec: dataset}
    for run in runs:
        spec = specs[run.name]
        if spec is None:
            unchecked[run.name] = "its config has no data/probe_size fields"
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
    return exclude_indices, fingerprints, checked, unchecked


def held_out_set_for(
    runs: Sequence[RunRecord],
    data: Any = None,
    *,
    splits: str | Sequence[str] | None = None,
    size: int = 64,
    image_size: Any = None,
) -> HeldOutSet:
    """The held-out set of a sweep: one set of images for all of ``runs``
    (``docs/selection.md``, section 5, tabulates the sources).

    ``data=None`` takes the runs' common training data (they must agree) minus every
    run's probe set (seen in training: ``from_training_data``), or, for synthetic scenes
    of several seeds, a scene family of a seed none of them used. Better, pass images no
    run trained on: a folder (with ``splits``), ``"synthetic"``, or a dataset object with
    ``load_image``. Images of any run's probe set are excluded by content either way.
    ``image_size`` (``N``, ``HxW`` or ``"native"``) defaults to the runs' common probe size.
    """
    if not runs:
        raise ValueError("no runs to rescore")
    specs: dict[str, tuple | None] = {run.name: _data_spec(run.config) for run in runs}
    image_size = _common_image_size(runs) if image_size is None else image_size
    known = {spec for spec in specs.values() if spec is not None}
    if data is None or isinstance(data, (str, os.PathLike)):
        held_out_spec, from_training = _source_spec(known, data, splits, size)
        dataset = _open(held_out_spec)
    else:
        held_out_spec, from_training, dataset = None, None, data
    exclude_indices, fingerprints, checked, unchecked = _probe_set_exclusions(runs, specs, held_out_spec, dataset)
    if unchecked:
        names = list(unchecked)
        warnings.warn(
            f"cannot rebuild the monitoring probe set of {len(names)} run(s) "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}; first reason: "
            f"{unchecked[names[0]]}); held-out images are not verified against them",
            stacklevel=2,
        )
    if held_out_spec is not None and held_out_spec in {specs[name] for name in checked}:
        from_training = True  # a run's own training data (minus its probe set)
    return build_held_out_set(
        dataset,
        size=size,
        image_size=image_size,
        exclude_fingerprints=fingerprints,
        exclude_indices=exclude_indices,
        checked_runs=checked,
        unchecked_runs=unchecked,
        from_training_data=from_training,
    )
