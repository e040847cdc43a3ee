"""``dse-tune score``: DSE (and the image-level baselines) of one model's dense features.

Examples::

    dse-tune score --checkpoint runs/dino/checkpoints/epoch=0010.ckpt --data synthetic
    dse-tune score --timm vit_small_patch16_224 --weights vit_s16.pth --data photos/ --image-size 224
    dse-tune score --data synthetic            # a randomly initialised tiny ViT: a smoke test

The probe images are the deterministic probe set of ``dse_tune.ssl.data`` (evenly
spread, resized, centre-cropped, no augmentation), so two models scored with the same
``--data``, ``--probe-size`` and ``--image-size`` see the same pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="a checkpoint written by 'dse-tune pretrain'")
    source.add_argument("--timm", metavar="NAME", help="a timm model name (created without downloading weights)")
    parser.add_argument("--weights", type=Path, help="with --timm: a state-dict file to load")
    parser.add_argument("--data", default="synthetic", help="an image folder, or 'synthetic' (default)")
    parser.add_argument("--splits", nargs="*", default=None, help="split folders to read (e.g. train val)")
    parser.add_argument("--probe-size", type=int, default=64, help="number of probe images (default 64)")
    parser.add_argument("--image-size", type=int, default=None, help="probe image side (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the DSE k-means and shuffle")
    parser.add_argument("--local-clusters", type=int, default=3)
    parser.add_argument("--global-clusters", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--baselines", action="store_true", help="also RankMe and alpha-ReQ (tokens and pooled)")
    parser.add_argument("--json", type=Path, default=None, help="write the result to this JSON file")


def _load_model(args: argparse.Namespace):
    """(model, image size) for the requested source."""
    import timm
    import torch

    if args.checkpoint is not None:
        from dse_tune.ssl.methods import load_checkpoint

        module = load_checkpoint(args.checkpoint)
        return module, module.config.image_size
    if args.timm is not None:
        kwargs = {"img_size": args.image_size} if args.image_size and "vit" in args.timm else {}
        try:
            model = timm.create_model(args.timm, pretrained=False, num_classes=0, **kwargs)
        except RuntimeError as error:
            raise SystemExit(f"--timm {args.timm!r}: {error}") from error
        if args.weights is not None:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing:
                print(f"warning: {len(missing)} weights missing from {args.weights} (e.g. {missing[0]})", file=sys.stderr)
            if unexpected:
                print(f"warning: {len(unexpected)} unused weights in {args.weights}", file=sys.stderr)
        size = args.image_size or model.default_cfg.get("input_size", (3, 224, 224))[-1]
        return model.eval(), size
    if args.weights is not None:
        raise SystemExit("--weights needs --timm NAME")
    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.methods import build_module

    torch.manual_seed(args.seed)
    config = PretrainConfig(method="dino", image_size=args.image_size or 32)
    return build_module(config).eval(), config.image_size


def run(args: argparse.Namespace) -> int:
    import torch

    import dse_tune
    from dse_tune.features import dense_tokens_batched
    from dse_tune.ssl.data import build_probe_set, open_dataset

    if args.probe_size < 2:
        raise SystemExit(f"--probe-size must be at least 2, got {args.probe_size}")
    model, image_size = _load_model(args)
    dataset = open_dataset(args.data, splits=args.splits, synthetic_image_size=max(image_size, 32))
    probe = build_probe_set(dataset, size=args.probe_size, image_size=image_size)
    with torch.no_grad():
        tokens = dense_tokens_batched(model, probe.images)
    result = dse_tune.dse(
        tokens,
        local_clusters=args.local_clusters,
        global_clusters=args.global_clusters,
        group_size=args.group_size,
        seed=args.seed,
    )
    report = {"probe": {"images": len(probe), "source": probe.source, "image_size": image_size}, "dse": result.as_dict()}
    if args.baselines:
        report["rankme_tokens"] = dse_tune.rankme(tokens)
        report["rankme_pooled"] = dse_tune.rankme(tokens, pool=True)
        alpha = dse_tune.alpha_req(tokens)
        report["alpha_req_tokens"] = {"alpha": alpha.alpha, "r2": alpha.r2}
    print(f"probe: {len(probe)} images of {probe.source}, {tokens.shape[1]} tokens x {tokens.shape[2]} channels")
    for name in ("score", "inter", "intra_image", "intra_batch", "dim"):
        print(f"  {'dse' if name == 'score' else name:<12} {getattr(result, name): .5f}")
    for name in ("rankme_tokens", "rankme_pooled"):
        if name in report:
            print(f"  {name:<12} {report[name]: .3f}")
    if args.json is not None:
        from dse_tune.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0
