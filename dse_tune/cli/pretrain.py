"""``dse-tune pretrain``: dense SSL pretraining with DSE monitoring (see
:func:`dse_tune.ssl.pretrain.pretrain` for the run folder it writes).

Examples::

    dse-tune pretrain --method dino --data synthetic --epochs 20 --out runs/dino
    dse-tune pretrain --method mae --data ../shared/data/camvid --splits train val --epochs 50 --out runs/mae
    dse-tune pretrain --config run.yaml --out runs/a --set dse_beta=0.1 --set teacher_momentum=0.99
    dse-tune pretrain --out runs/dino --resume --epochs 40     # continue to 40 epochs
    dse-tune pretrain --method dino --devices 4 --strategy ddp --precision bf16-mixed --out runs/dino4
    dse-tune pretrain --method ibot --epochs 100 --out runs/ibot --early-stop \\
        --set 'degradation={warmup: 5, patience: 3, min_drop: 0.1}'

Resuming with the same ``--epochs`` continues exactly (optimizer, schedules, epoch, DSE
history); a larger ``--epochs`` also stretches the cosine schedules to the new total.
Heavy imports (torch, Lightning) happen inside :func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from dse_tune.cli.common import fail, image_size, integer_at_least
from dse_tune.runs import CONFIG_FILE

if TYPE_CHECKING:
    from dse_tune.pretrain_config import PretrainConfig

__all__ = ["add_arguments", "config_from_args", "run"]

def _devices(text: str) -> int | str:
    return int(text) if text.strip().lstrip("-").isdigit() else text


def _yes_no(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# CLI flag -> PretrainConfig field, for the settings people change most.
_FLAGS = {
    "method": ("--method", str, "SSL method: dino, ibot, mae or mocov3"),
    "data": ("--data", str, "'synthetic' (embedded scenes) or an image folder"),
    "epochs": ("--epochs", int, "number of epochs (with --resume: the new total)"),
    "backbone": ("--backbone", str, "'vit' (sized by the flags below) or a timm model name"),
    "image_size": ("--image-size", int, "input size in pixels"),
    "patch_size": ("--patch-size", int, "ViT patch size"),
    "embed_dim": ("--embed-dim", int, "ViT width"),
    "depth": ("--depth", int, "ViT depth"),
    "num_heads": ("--heads", int, "ViT attention heads"),
    "batch_size": ("--batch-size", int, "images per batch"),
    "lr": ("--lr", float, "peak learning rate"),
    "weight_decay": ("--weight-decay", float, "AdamW weight decay"),
    "warmup_epochs": ("--warmup-epochs", int, "linear learning-rate warm-up epochs"),
    "teacher_momentum": ("--teacher-momentum", float, "EMA momentum at the start (cosine to 1)"),
    "mask_ratio": ("--mask-ratio", float, "MAE masked share / iBOT largest masked share"),
    "dse_beta": ("--dse-beta", float, "DSE regularizer weight (0 = off)"),
    "eval_every_n_epochs": ("--eval-every", int, "DSE evaluation and checkpoint period in epochs"),
    "probe_size": ("--probe-size", int, "number of probe images scored by DSE"),
    "probe_image_size": ("--probe-image-size", image_size,
                         "probe images' size: N (square), HxW (e.g. 96x128) or native (default: --image-size)"),
    "num_workers": ("--num-workers", int, "data loader worker processes"),
    "seed": ("--seed", int, "training seed: weights, augmentations, synthetic scenes (DSE's own: --set probe_seed=N)"),
    "accelerator": ("--accelerator", str, "Lightning accelerator: auto, cpu, gpu, ..."),
    "devices": ("--devices", _devices, "devices per run: a count (2), 'auto', -1 (all) or indices '0,1'"),
    "strategy": ("--strategy", str, "Lightning strategy: auto, ddp (several GPUs), ddp_spawn, ..."),
    "precision": ("--precision", str, "32-true (or 32), bf16-mixed, or 16-mixed (CUDA only)"),
    "dse_global_batch": ("--dse-global-batch", _yes_no, "under DDP, the regularizer scores the global batch "
                         "(all-gathered with gradient): true/false"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Precedence: PretrainConfig defaults < --config file < flags < --set.\n"
        "Example: dse-tune pretrain --method dino --data synthetic --epochs 20 --out runs/dino"
    )
    parser.add_argument("--out", required=True, type=Path, help="run folder (created)")
    parser.add_argument("--config", type=Path, help="YAML or JSON file of PretrainConfig fields")
    for name, (flag, kind, help_text) in _FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)
    parser.add_argument("--splits", nargs="+", default=None, help="split folders of --data (e.g. train val)")
    parser.add_argument("--early-stop", dest="early_stop", action="store_true", default=None,
                        help="stop when the DSE degradation rule fires")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="set any PretrainConfig field (YAML value), repeatable, e.g. --set teacher_temp=0.07")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN_DIR from checkpoints/last.ckpt with its config.json (flags override)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--threads", type=integer_at_least(1), default=None,
                        help="torch CPU threads (default: torch's choice; 1 is often fastest for tiny models "
                             "on a busy machine)")


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs, each typed from the field's declaration (``1e-4`` a number)."""
    from dse_tune.pretrain_config import PretrainConfig
    from dse_tune.typed_config import ConfigValueError, parse_assignment, typed_fields

    values: dict[str, Any] = {}
    for pair in pairs:
        try:
            values.update(typed_fields(PretrainConfig, dict([parse_assignment(pair)])))
        except ConfigValueError as error:
            raise ValueError(f"--set {pair}: {error}") from None
    return values


def config_from_args(args: argparse.Namespace) -> "PretrainConfig":
    """defaults < --config (or RUN_DIR/config.json with --resume) < flags < --set."""
    from dse_tune.pretrain_config import PretrainConfig
    from dse_tune.typed_config import read_config_file

    values: dict[str, Any] = {}
    if args.resume:
        saved = Path(args.out) / CONFIG_FILE
        if not saved.is_file():
            raise ValueError(f"--resume: {saved} does not exist; is {args.out} a dse-tune run folder?")
        values.update(read_config_file(saved, PretrainConfig))
    if args.config is not None:
        # With --resume only the fields the file sets win over the saved ones.
        values.update(read_config_file(args.config, PretrainConfig))
    for name in (*_FLAGS, "early_stop"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.splits is not None:
        values["splits"] = list(args.splits)
    values.update(_parse_overrides(args.overrides))
    return PretrainConfig.from_dict(values).validate()


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, TypeError, OSError) as error:
        fail(str(error))

    from dse_tune.ssl.pretrain import pretrain

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    # DatasetError, BackboneMismatchError, a missing --resume checkpoint: ValueError or
    # OSError, reported by dse_tune.cli.main as one line.
    result = pretrain(
        config,
        args.out,
        resume_from="last" if args.resume else None,
        enable_progress_bar=not args.no_progress,
    )
    if result.is_global_zero:  # under DDP every rank runs this command; one reports
        _print_summary(result)
    return 0


def _print_summary(result: Any) -> None:
    evaluations = result.history["evaluations"]
    print(f"run folder: {result.run_dir}")
    print(f"epochs trained: {result.epochs_completed}; DSE evaluations: {len(evaluations)}")
    if evaluations:
        from dse_tune.degradation import peak

        found = peak([r["dse"] for r in evaluations])
        if found:
            best = evaluations[found.index]
            print(f"best DSE {best['dse']:.4f} at epoch {best['epoch']} ({best['checkpoint']})")
        else:
            print(f"best DSE: none ({found.reason})")
        print(f"kept: {result.chosen_checkpoint} ({result.choice_reason})")
    if result.stopped_early:
        print(f"stopped early: {result.stop_reason}")
