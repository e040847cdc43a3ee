"""``dse-tune score``: DSE (and the image-level baselines) of one model's dense features.

Examples::

    dse-tune score --checkpoint runs/dino/checkpoints/epoch=0010.ckpt   # the run's own probe set
    dse-tune score --checkpoint dino/checkpoint0100.pth --arch vit_small_patch16_224 --data photos/
    dse-tune score --timm vit_small_patch16_224 --weights vit_s16.pth --data photos/ --image-size 224
    dse-tune score --data synthetic            # a randomly initialised tiny ViT: a smoke test

The probe images are the deterministic probe set of ``dse_tune.data``, so two models
scored with the same ``--data``, ``--probe-size`` and ``--image-size`` see the same pixels.
A checkpoint of a run folder (``RUN_DIR/checkpoints/...``, or any file with ``--run
RUN_DIR``) is scored on that run's probe set and DSE seed, so the value is the one in the
run's history; flags given explicitly override. ``--arch`` (with ``--format``, ...) reads
any checkpoint ``dse-tune track`` reads. Every problem with the input is one ``error:``
line and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from dse_tune.cli.common import fail
from dse_tune.cli.track import add_model_arguments, add_probe_arguments, probe_settings, read_settings

__all__ = ["add_arguments", "run"]

def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by 'dse-tune pretrain'")
    source.add_argument("--timm", metavar="NAME", help="a timm model name (created without downloading weights)")
    parser.add_argument("--weights", type=Path,
                        help="with --timm: a checkpoint to load strictly (--format, --prefix apply); "
                             "without it the model is a random initialisation (seed 0)")
    parser.add_argument("--run", type=Path, default=None, metavar="RUN_DIR",
                        help="take the probe set (and, for a tracked run, the architecture) from this run's config")
    add_model_arguments(parser, required=False)
    parser.add_argument("--layer", default="-1", help="-1 (last block + final norm, default) or a block index")
    add_probe_arguments(parser, defaults=False)
    parser.add_argument("--local-clusters", type=int, default=3)
    parser.add_argument("--global-clusters", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--baselines", action="store_true", help="also RankMe and alpha-ReQ (tokens and pooled)")
    parser.add_argument("--json", type=Path, default=None, help="write the result to this JSON file")


def _check_arguments(args: argparse.Namespace) -> None:
    """The checks that need no torch: a wrong path fails at once, not after the imports."""
    if args.weights is not None and args.timm is None:
        fail("--weights needs --timm NAME")
    for flag, path in (("--checkpoint", args.checkpoint), ("--weights", args.weights)):
        if path is not None and not path.is_file():
            fail(f"{flag} {path}: no such file" if not path.exists() else f"{flag} {path}: not a file")
    if args.arch is not None and args.timm is not None:
        fail("--arch and --timm both name a model: give one")
    if args.run is not None and not args.run.is_dir():
        fail(f"--run {args.run}: no such folder")


def _run_of(args: argparse.Namespace) -> Path | None:
    """The run folder whose probe set applies: ``--run``, or the one holding the checkpoint."""
    from dse_tune.runs import CHECKPOINT_DIR, CONFIG_FILE, HISTORY_FILE

    if args.run is not None:
        return args.run
    if args.checkpoint is None or args.checkpoint.resolve().parent.name != CHECKPOINT_DIR:
        return None
    folder = args.checkpoint.resolve().parent.parent
    return folder if (folder / CONFIG_FILE).is_file() or (folder / HISTORY_FILE).is_file() else None


def _load_model(args: argparse.Namespace, recorded: dict[str, Any]):
    """(model, image size) for the requested source."""
    if args.arch is not None or (args.checkpoint is not None and "tracked" in recorded and args.timm is None):
        return _load_foreign(args, recorded)
    if args.checkpoint is not None:
        if args.format != "auto" or args.prefix is not None:
            fail("--format and --prefix read a foreign checkpoint: give --arch too")
        module, size = _load_checkpoint(args)
        return module, recorded.get("image_size") or size
    if args.timm is not None:
        return _load_timm(args)
    import torch

    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.methods import build_module

    torch.manual_seed(0)  # the smoke-test model is always the same one
    config = PretrainConfig(method="dino", image_size=args.image_size if isinstance(args.image_size, int) else 32)
    return build_module(config).eval(), config.image_size


def _load_checkpoint(args: argparse.Namespace):
    """A ``dse-tune pretrain`` checkpoint: the network its monitor scored, read weights-only
    (``--trust`` to allow pickled objects) and rebuilt from the config it records."""
    from dse_tune.checkpoints.pretrain_run import load_pretrain_backbone

    try:
        model, config = load_pretrain_backbone(args.checkpoint, trust=args.trust)
    except ValueError as error:  # CheckpointReadError, CheckpointMismatchError
        fail(f"--checkpoint {args.checkpoint}: {error}")
    return model, config.get("image_size", 32)


def _load_foreign(args: argparse.Namespace, recorded: dict[str, Any]):
    """A model built from ``--arch`` (or a tracked run's settings) with the checkpoint loaded strictly."""
    from dse_tune.checkpoints import build_architecture
    from dse_tune.checkpoints.layers import resolve_layer
    from dse_tune.checkpoints.tracked_run import LayerTokens, ReadSettings

    if args.arch is not None:
        read = read_settings(args)
    else:
        tracked = recorded["tracked"]
        read = ReadSettings.from_config(tracked)
        read = dataclasses.replace(read, format=tracked.get("format_found") or read.format, layer=read.history_layer)
    if args.checkpoint is None:
        fail("--arch needs --checkpoint FILE")
    model = build_architecture(read.arch, read.arch_kwargs)
    _load_weights(model, args.checkpoint, read, "--checkpoint")
    layer = read.history_layer
    resolve_layer(model, layer)
    model = model if layer == -1 else LayerTokens(model, layer, read.layer_norm)
    return model.eval(), recorded.get("image_size") or _input_size(model, read.arch_kwargs)


def _load_timm(args: argparse.Namespace):
    """``--timm NAME`` with ``--arch-kwargs``: ``--weights`` loaded strictly, or a random
    initialisation seeded with 0 (the same command gives the same number)."""
    import torch

    from dse_tune.checkpoints import build_architecture

    read = read_settings(args)
    kwargs = dict(read.arch_kwargs)
    if isinstance(args.image_size, int) and "vit" in args.timm:
        kwargs.setdefault("img_size", args.image_size)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_architecture(args.timm, kwargs)
    if args.weights is not None:
        _load_weights(model, args.weights, read, "--weights")
    else:
        print(f"{args.timm}: random initialisation (seed 0), no --weights given")
    return model.eval(), args.image_size or _input_size(model, kwargs)


def _load_weights(model: Any, path: Path, read: Any, flag: str) -> None:
    """Load ``path`` into ``model`` through the one strict loader; a misfit is one error line."""
    from dse_tune.checkpoints import load_backbone

    try:
        report = load_backbone(model, path, read.format, allow_missing=read.allow_missing,
                               allow_extra=read.allow_extra, prefix=read.prefix, trust=read.trust)
    except ValueError as error:  # unreadable, not fitting, ambiguous: the message says which
        fail(f"{flag} {path}: {error}")
    print(f"{flag} {path}: {report.summary()}")
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)


def _input_size(model: Any, kwargs: Any) -> int:
    size = kwargs.get("img_size")
    if isinstance(size, int):
        return size
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return int(config.get("input_size", (3, 224, 224))[-1])


def _probe_images(settings: Any, image_size: int):
    try:
        return settings.build(image_size)
    except (OSError, ValueError) as error:  # DatasetError is a ValueError
        fail(f"--data {settings.data}: {error}")


def run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    import torch

    import dse_tune
    from dse_tune.features import dense_tokens_batched

    from dse_tune.runs import read_config

    run_dir = _run_of(args)
    recorded = read_config(run_dir) if run_dir is not None else {}
    settings = probe_settings(args, recorded)
    if run_dir is not None:
        print(f"probe set and DSE seed of the run {run_dir} (flags given override)")
    model, image_size = _load_model(args, recorded)
    probe = _probe_images(settings, settings.image_size or image_size)
    try:
        with torch.no_grad():
            tokens = dense_tokens_batched(model, probe.images)
    except (RuntimeError, AssertionError) as error:  # e.g. images the model cannot take
        fail(f"cannot compute dense tokens of {tuple(probe.images.shape[-2:])} probe images: {error}")
    try:
        scored = dse_tune.score_tokens(
            tokens,
            local_clusters=args.local_clusters,
            global_clusters=args.global_clusters,
            group_size=args.group_size,
            seed=settings.probe_seed,
        )
    except ValueError as error:  # too few images or tokens for the clusters
        fail(f"cannot score {len(probe)} images of {tokens.shape[1]} tokens: {error}")
    if not scored.ok:
        fail(f"DSE of {probe.source}: {scored.failure}")
    result = scored.result
    report = {"probe": {"images": len(probe), "source": probe.source, "image_size": list(probe.image_size),
                        "settings": settings.to_config()}, "dse": result.as_dict()}
    if args.baselines:
        report["rankme_tokens"] = dse_tune.rankme(tokens)
        report["rankme_pooled"] = dse_tune.rankme(tokens, pool=True)
        alpha = dse_tune.alpha_req(tokens)
        report["alpha_req_tokens"] = {"alpha": alpha.alpha, "r2": alpha.r2}
    _print_report(report, result, probe, tokens)
    if args.json is not None:
        from dse_tune.atomic import atomic_write_json

        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _print_report(report: dict[str, Any], result: Any, probe: Any, tokens: Any) -> None:
    print(f"probe: {len(probe)} images of {probe.source}, {tokens.shape[1]} tokens x {tokens.shape[2]} channels")
    for name in ("score", "inter", "intra_image", "intra_batch", "dim"):
        print(f"  {'dse' if name == 'score' else name:<12} {getattr(result, name): .5f}")
    for name in ("rankme_tokens", "rankme_pooled"):
        if name in report:
            print(f"  {name:<12} {report[name]: .3f}")
