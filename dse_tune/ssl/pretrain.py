"""``dse-tune pretrain``: dense SSL pretraining with DSE monitoring, and its Python API.

Writes a run folder::

    RUN_DIR/
      config.json              the PretrainConfig of the run (enough to rebuild any checkpoint)
      checkpoints/epoch=EEEE.ckpt   one per DSE evaluation (metadata: its DSE record)
      checkpoints/last.ckpt    end of the latest epoch (what --resume continues from)
      dse_history.json, .csv   one row per DSE evaluation (see dse_tune.integrations.lightning)
      dse_curve.png            DSE and its components over epochs
      logs/version_N/metrics.csv    Lightning's CSV log (losses, lr, dse, ...), one folder per fit

Examples::

    dse-tune pretrain --method dino --data synthetic --epochs 20 --out runs/dino
    dse-tune pretrain --method mae --data ../shared/data/camvid --splits train val --epochs 50 --out runs/mae
    dse-tune pretrain --config run.yaml --out runs/a --set dse_beta=0.1 --set teacher_momentum=0.99
    dse-tune pretrain --out runs/dino --resume --epochs 40     # continue to 40 epochs
    dse-tune pretrain --method ibot --epochs 100 --out runs/ibot --early-stop \
        --set 'degradation={warmup: 5, patience: 3, min_drop: 0.1}'

Resuming with the same ``--epochs`` continues exactly (optimizer, schedules, epoch, DSE
history); a larger ``--epochs`` also stretches the cosine schedules to the new total.

Heavy imports (torch, Lightning) happen inside :func:`run` and :func:`pretrain` so that
``dse-tune --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch.utils.data import Dataset

    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.module import DenseSSLModule
    from dse_tune.tracker import Listener

from dse_tune.runs import CONFIG_FILE, LAST_CHECKPOINT


@dataclass
class RunResult:
    """What :func:`pretrain` returns.

    Attributes:
        run_dir: the run folder.
        config: the run's :class:`~dse_tune.ssl.config.PretrainConfig`.
        history: the DSE history dict (same content as ``dse_history.json``).
        best_checkpoint: checkpoint of the highest DSE, or None (no evaluation).
        last_checkpoint: ``checkpoints/last.ckpt``.
        epochs_completed: epochs trained in total (including resumed ones).
        module: the trained LightningModule (in memory).
    """

    run_dir: Path
    config: "PretrainConfig"
    history: dict[str, Any]
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    epochs_completed: int
    module: "DenseSSLModule | None" = field(default=None, repr=False)

    @property
    def stopped_early(self) -> bool:
        return bool(self.history.get("stopped_early"))

    @property
    def stop_reason(self) -> str | None:
        return self.history.get("stop_reason")

    @property
    def best_dse(self) -> float | None:
        """The run's peak DSE (:func:`dse_tune.degradation.peak`: NaN-safe), or None."""
        from dse_tune.degradation import peak

        return peak([r["dse"] for r in self.history.get("evaluations", [])]).value


def pretrain(
    config: "PretrainConfig | Mapping[str, Any] | str | Path",
    out_dir: str | Path,
    *,
    data: "str | Path | Dataset | None" = None,
    callbacks: Sequence["pl.Callback"] = (),
    listeners: Sequence["Listener"] = (),
    resume_from: str | Path | None = None,
    logger: "bool | Any" = True,
    enable_progress_bar: bool = True,
    accelerator: str = "auto",
    devices: int | str = 1,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> RunResult:
    """Pretrain ``config.method`` with DSE monitoring; write the run folder ``out_dir``.

    Args:
        config: a PretrainConfig, a dict of its fields, or a YAML/JSON file.
        out_dir: the run folder (created).
        data: overrides ``config.data``: ``"synthetic"``, a folder, or a dataset with
            ``load_image(i)`` (its description is recorded, not the object).
        callbacks: extra Lightning callbacks (a sweep's reporter, a pruner,
            ``ModelCheckpoint(monitor="dse", mode="max")``, ...). They run after the
            DSE monitor, so they see the ``dse`` it logged in the same epoch.
        listeners: functions ``fn(evaluation, decision)`` added to the run's
            :class:`~dse_tune.tracker.DSETracker` (see ``DSEMonitor.add_listener``):
            how a sweep reports each evaluation and how a pruner stops the run.
        resume_from: a checkpoint to continue from (optimizer, schedules, epoch and
            DSE history restored), or ``"last"`` for ``out_dir/checkpoints/last.ckpt``.
        logger: ``True`` for a CSV log in ``out_dir/logs/version_N``, ``False`` for none, or a
            Lightning logger.
        enable_progress_bar, accelerator, devices: passed to ``lightning.pytorch.Trainer``.
        trainer_kwargs: more ``Trainer`` arguments (they win over the ones above).

    Returns:
        A :class:`RunResult`.
    """
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, Dataset

    from dse_tune.integrations.lightning import DSEMonitor
    from dse_tune.runs import write_config
    from dse_tune.ssl.config import PretrainConfig
    from dse_tune.ssl.data import ViewsDataset, build_probe_set, open_dataset
    from dse_tune.ssl.methods import build_module

    if isinstance(config, (str, Path)):
        config = PretrainConfig.from_file(config)
    elif not isinstance(config, PretrainConfig):
        config = PretrainConfig.from_dict(config)
    if data is not None and not isinstance(data, Dataset):
        config = config.replace(data=str(data))
    config.validate()
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    if resume_from is not None:
        resume_from = run_dir / LAST_CHECKPOINT if str(resume_from) == "last" else Path(resume_from)
        if not resume_from.is_file():
            raise FileNotFoundError(f"cannot resume: checkpoint {resume_from} does not exist")

    pl.seed_everything(config.seed, workers=True, verbose=False)
    dataset = open_dataset(
        data if isinstance(data, Dataset) else config.data,
        splits=config.splits,
        synthetic_size=config.synthetic_size,
        seed=config.seed,
    )
    if len(dataset) < config.batch_size:
        raise ValueError(
            f"batch_size ({config.batch_size}) exceeds the {len(dataset)} images of {dataset.describe()}; "
            "lower batch_size (batches are full: drop_last)"
        )
    probe = build_probe_set(dataset, size=config.probe_size, image_size=config.image_size)
    module = build_module(config)

    recorded = config.to_dict()
    if isinstance(data, Dataset):
        recorded["data"] = dataset.describe() if hasattr(dataset, "describe") else type(dataset).__name__
    write_config(run_dir, recorded)

    rule = None
    if config.early_stop:
        from dse_tune.degradation import DegradationRule

        try:
            rule = DegradationRule(**config.degradation)
        except TypeError as error:
            raise ValueError(f"degradation {config.degradation!r}: {error}") from error
    monitor = DSEMonitor(
        probe.images,
        run_dir=run_dir,
        every_n_epochs=config.eval_every_n_epochs,
        seed=config.probe_seed,
        save_last=True,
        early_stopping=rule,
        config=recorded,
        plot=True,
    )

    for listener in listeners:
        monitor.add_listener(listener)
    _check_probe_fits_dse(monitor.compute_tokens(module), config)

    loader = DataLoader(
        ViewsDataset(dataset, module.build_transform()),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
    )
    if logger is True:
        # One version folder per fit: Lightning's CSV writer deletes an existing
        # metrics.csv, which would lose the log of the run a resume continues.
        logger = CSVLogger(save_dir=str(run_dir), name="logs")
    all_callbacks = [monitor, *callbacks]
    arguments: dict[str, Any] = dict(
        max_epochs=config.epochs,
        accelerator=accelerator,
        devices=devices,
        callbacks=all_callbacks,
        logger=logger,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        # The monitor writes the checkpoints; Lightning's only if the caller adds one.
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        gradient_clip_val=config.gradient_clip_val,
        default_root_dir=str(run_dir),
        log_every_n_steps=max(1, min(50, len(loader))),
        num_sanity_val_steps=0,
    )
    arguments.update(trainer_kwargs or {})
    trainer = pl.Trainer(**arguments)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=str(resume_from) if resume_from else None)

    best = monitor.best
    best_checkpoint = run_dir / best["checkpoint"] if best and best.get("checkpoint") else None
    last_checkpoint = run_dir / LAST_CHECKPOINT
    return RunResult(
        run_dir=run_dir,
        config=config,
        history=monitor.history,
        best_checkpoint=best_checkpoint,
        last_checkpoint=last_checkpoint if last_checkpoint.is_file() else None,
        epochs_completed=int(trainer.current_epoch),
        module=module,
    )


def _check_probe_fits_dse(tokens: Any, config: "PretrainConfig") -> None:
    """Fail before training, not at the first evaluation, when DSE (with its default
    clusters) cannot score the probe set: too few images, or too few tokens per image."""
    import inspect

    from dse_tune.metrics.dse_metric import check_cluster_sizes, dse

    defaults = {name: p.default for name, p in inspect.signature(dse).parameters.items()}
    num_images, num_tokens = int(tokens.shape[0]), int(tokens.shape[1])
    try:
        check_cluster_sizes(
            num_images, num_tokens, defaults["local_clusters"], defaults["global_clusters"], defaults["group_size"]
        )
    except ValueError as error:
        raise ValueError(
            f"DSE cannot score the probe set: {num_images} images (probe_size {config.probe_size}) of "
            f"{num_tokens} tokens (image_size {config.image_size}): {error}"
        ) from error


# ---------------------------------------------------------------------------- CLI

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
    "num_workers": ("--num-workers", int, "data loader worker processes"),
    "seed": ("--seed", int, "random seed"),
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
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator (auto, cpu, gpu, ...)")
    parser.add_argument("--devices", default="1", help="Lightning devices (number or 'auto')")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is often fastest for tiny models "
                             "on a busy machine)")


def _parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for pair in pairs:
        name, separator, text = pair.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"--set expects FIELD=VALUE, got {pair!r}")
        values[name.strip()] = yaml.safe_load(text)
    return values


def config_from_args(args: argparse.Namespace) -> "PretrainConfig":
    """defaults < --config (or RUN_DIR/config.json with --resume) < flags < --set."""
    from dse_tune.ssl.config import PretrainConfig

    values: dict[str, Any] = {}
    if args.resume:
        saved = Path(args.out) / CONFIG_FILE
        if not saved.is_file():
            raise ValueError(f"--resume: {saved} does not exist; is {args.out} a dse-tune run folder?")
        values.update(PretrainConfig.from_file(saved).to_dict())
    if args.config is not None:
        values.update(PretrainConfig.from_file(args.config).to_dict() if not args.resume else _explicit(args.config))
    for name in (*_FLAGS, "early_stop"):
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.splits is not None:
        values["splits"] = list(args.splits)
    values.update(_parse_overrides(args.overrides))
    return PretrainConfig.from_dict(values).validate()


def _explicit(path: Path) -> dict[str, Any]:
    """Only the fields a file sets (so --resume keeps the saved values of the rest)."""
    import yaml

    text = Path(path).read_text()
    values = (yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)) or {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of field: value")
    return values


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, TypeError) as error:
        print(f"dse-tune pretrain: error: {error}", file=sys.stderr)
        return 2

    from dse_tune.ssl.data import DatasetError
    from dse_tune.ssl.module import BackboneMismatchError

    if args.threads is not None:
        import torch

        if args.threads < 1:
            print(f"dse-tune pretrain: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    devices: int | str = int(args.devices) if str(args.devices).isdigit() else args.devices
    try:
        result = pretrain(
            config,
            args.out,
            resume_from="last" if args.resume else None,
            enable_progress_bar=not args.no_progress,
            accelerator=args.accelerator,
            devices=devices,
        )
    except (DatasetError, BackboneMismatchError, FileNotFoundError, ValueError) as error:
        print(f"dse-tune pretrain: error: {error}", file=sys.stderr)
        return 2

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
    if result.stopped_early:
        print(f"stopped early: {result.stop_reason}")
    return 0
