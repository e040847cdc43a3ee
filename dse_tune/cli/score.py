"""``dse-tune score``: DSE (and the image-level baselines) of one model's dense features.

Examples::

    dse-tune score --checkpoint runs/dino/checkpoints/epoch=0010.ckpt   # the run's own probe set
    dse-tune score --checkpoint dino/checkpoint0100.pth --arch vit_small_patch16_224 --data photos/
    dse-tune score --timm vit_small_patch16_224 --weights vit_s16.pth --data photos/ --image-size 224
    dse-tune score --data synthetic            # a randomly initialised tiny ViT: a smoke test

The probe images are the deterministic probe set of ``dse_tune.data`` (evenly
spread, resized, centre-cropped, no augmentation), so two models scored with the same
``--data``, ``--probe-size`` and ``--image-size`` see the same pixels. A checkpoint of a
run folder (``RUN_DIR/checkpoints/...``, or any file with ``--run RUN_DIR``) is scored on
that run's probe set and DSE seed (its ``config.json``), so the value is the one in the
run's history; flags given explicitly override. ``--arch`` (with ``--format``,
``--arch-kwargs``, ...) reads any checkpoint ``dse-tune track`` reads; a tracked run's
checkpoints are read the way its ``config.json`` says.

Every problem with the input (a missing or foreign checkpoint, a missing folder, an
unreadable image, a weights file that does not fit the model, features DSE cannot
score) is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

from dse_tune.cli.common import fail
from dse_tune.cli.track import add_model_arguments, add_probe_arguments, probe_settings, read_settings

__all__ = ["add_arguments", "run"]

# What loading a user's file can raise (a truncated or foreign file): reported, not a bug.
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by 'dse-tune pretrain'")
    source.add_argument("--timm", metavar="NAME", help="a timm model name (created without downloading weights)")
    parser.add_argument("--weights", type=Path, help="with --timm: a state-dict file to load")
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
        module, size = _load_checkpoint(args.checkpoint)
        return module, recorded.get("image_size") or size
    if args.timm is not None:
        return _load_timm(args)
    import torch

    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.methods import build_module

    torch.manual_seed(args.seed or 0)
    config = PretrainConfig(method="dino", image_size=args.image_size or 32)
    return build_module(config).eval(), config.image_size


def _load_checkpoint(path: Path):
    from dse_tune.ssl.methods import load_checkpoint

    try:
        module = load_checkpoint(path)
    except _LOAD_ERRORS as error:
        fail(f"--checkpoint {path}: cannot load it: {error}")
    return module, module.config.image_size


def _load_foreign(args: argparse.Namespace, recorded: dict[str, Any]):
    """A model built from ``--arch`` (or a tracked run's settings) with the checkpoint loaded strictly."""
    from dse_tune.checkpoints import build_architecture, load_backbone
    from dse_tune.checkpoints.layers import resolve_layer
    from dse_tune.checkpoints.tracked_run import LayerTokens, ReadSettings

    if args.arch is not None:
        read = read_settings(args)
    else:
        tracked = recorded["tracked"]
        read = ReadSettings.from_config(tracked)
        read = ReadSettings(read.arch, read.arch_kwargs, tracked.get("format_found") or read.format, read.prefix,
                            read.allow_missing, read.history_layer, read.trust)
    if args.checkpoint is None:
        fail("--arch needs --checkpoint FILE")
    model = build_architecture(read.arch, read.arch_kwargs)
    load_backbone(model, args.checkpoint, read.format, allow_missing=read.allow_missing, prefix=read.prefix,
                  trust=read.trust)
    layer = read.history_layer
    resolve_layer(model, layer)
    size = read.arch_kwargs.get("img_size") or (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224))[-1]
    return (model if layer == -1 else LayerTokens(model, layer)).eval(), recorded.get("image_size") or size


def _load_timm(args: argparse.Namespace):
    import timm

    kwargs = {"img_size": args.image_size} if args.image_size and "vit" in args.timm else {}
    try:
        model = timm.create_model(args.timm, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as error:
        fail(f"--timm {args.timm!r}: {error}")
    if args.weights is not None:
        _load_weights(model, args.weights)
    size = args.image_size or model.default_cfg.get("input_size", (3, 224, 224))[-1]
    return model.eval(), size


def _load_weights(model: Any, path: Path) -> None:
    """Load a state dict into ``model``; refuse a file that leaves most of it random."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as error:
        fail(f"--weights {path}: cannot load it: {error}")
    if not isinstance(state, dict):
        fail(f"--weights {path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape mismatch: the file is for another model
        fail(f"--weights {path}: does not fit the model: {error}")
    total = len(model.state_dict())
    if len(missing) > total / 2:
        # Scoring a mostly random network would print a plausible number for the wrong model.
        fail(
            f"--weights {path}: {len(missing)} of the model's {total} weights are missing from the file "
            f"(first: {', '.join(missing[:3])}); is it a state dict of this model?"
        )
    if missing:
        print(f"warning: {len(missing)} weights missing from {path} (e.g. {missing[0]})", file=sys.stderr)
    if unexpected:
        print(f"warning: {len(unexpected)} unused weights in {path}", file=sys.stderr)


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
    with torch.no_grad():
        tokens = dense_tokens_batched(model, probe.images)
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
    report = {"probe": {"images": len(probe), "source": probe.source, "image_size": probe.images.shape[-1],
                        "settings": settings.to_config()}, "dse": result.as_dict()}
    if args.baselines:
        report["rankme_tokens"] = dse_tune.rankme(tokens)
        report["rankme_pooled"] = dse_tune.rankme(tokens, pool=True)
        alpha = dse_tune.alpha_req(tokens)
        report["alpha_req_tokens"] = {"alpha": alpha.alpha, "r2": alpha.r2}
    _print_report(report, result, probe, tokens)
    if args.json is not None:
        from dse_tune.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _print_report(report: dict[str, Any], result: Any, probe: Any, tokens: Any) -> None:
    print(f"probe: {len(probe)} images of {probe.source}, {tokens.shape[1]} tokens x {tokens.shape[2]} channels")
    for name in ("score", "inter", "intra_image", "intra_batch", "dim"):
        print(f"  {'dse' if name == 'score' else name:<12} {getattr(result, name): .5f}")
    for name in ("rankme_tokens", "rankme_pooled"):
        if name in report:
            print(f"  {name:<12} {report[name]: .3f}")
