"""Dense SSL pretraining with DSE monitoring: :func:`pretrain` (the command line
``dse-tune pretrain`` is :mod:`dse_tune.cli.pretrain`).

It writes the run folder of ``docs/pretraining.md`` (format: ``docs/run-folder.md``):
``config.json`` (the PretrainConfig, enough to rebuild any checkpoint), one
``checkpoints/epoch=EEEE.ckpt`` per DSE evaluation, ``checkpoints/last.ckpt`` (what
``--resume`` continues from), ``dse_history.json``/``.csv``, ``dse_curve.png`` and
Lightning's CSV log in ``logs/version_N/`` (one folder per fit).

Heavy imports (torch, Lightning) happen inside :func:`pretrain` so that importing this
module (and ``dse-tune --help``) stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch.utils.data import Dataset

    from dse_tune.pretrain_config import PretrainConfig
    from dse_tune.ssl.module import DenseSSLModule
    from dse_tune.tracker import Listener

from dse_tune.runs import LAST_CHECKPOINT


@dataclass
class RunResult:
    """What :func:`pretrain` returns.

    Attributes:
        history: the DSE history dict (same content as ``dse_history.json``).
        chosen_checkpoint: the checkpoint the run's decision keeps (:func:`dse_tune.decision.run_choice`,
            what ``dse-tune select`` keeps), or None (no finite evaluation).
        choice_reason: that decision in one line (how sure it is included).
        epochs_completed: epochs trained in total (including resumed ones).
        is_global_zero: False in the other processes of a DDP run (each runs
            :func:`pretrain`); only rank 0 should report.
    """

    run_dir: Path
    config: "PretrainConfig"
    history: dict[str, Any]
    chosen_checkpoint: Path | None
    choice_reason: str
    last_checkpoint: Path | None
    epochs_completed: int
    module: "DenseSSLModule | None" = field(default=None, repr=False)
    is_global_zero: bool = True

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
    accelerator: str | None = None,
    devices: int | str | list[int] | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
) -> RunResult:
    """Pretrain ``config.method`` with DSE monitoring; write the run folder ``out_dir``.

    Args:
        config: a PretrainConfig, a dict of its fields, or a YAML/JSON file.
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
        accelerator, devices: override ``config.accelerator`` / ``config.devices`` (recorded
            in ``config.json``). Under DDP (``config.strategy="ddp"``) every rank runs this
            function; rank 0 writes the run folder.
        trainer_kwargs: more ``Trainer`` arguments (they win over the ones above).
    """
    from torch.utils.data import Dataset

    from dse_tune.data import probe_set_for
    from dse_tune.runs import write_config
    from dse_tune.ssl.methods import build_module
    from dse_tune.typed_config import recorded_image_size

    config = _resolve_config(config, None if isinstance(data, Dataset) else data)
    overrides = {name: value for name, value in (("accelerator", accelerator), ("devices", devices)) if value is not None}
    config = config.replace(**overrides).validate() if overrides else config
    check_device_settings(config)
    run_dir = Path(out_dir)
    resume_from = _resume_path(run_dir, resume_from)

    import lightning.pytorch as pl

    pl.seed_everything(config.seed, workers=True, verbose=False)
    # Everything that can refuse the run (a corrupt image, a backbone, a probe DSE cannot
    # score) is checked before the run folder exists: a refused run leaves nothing behind.
    dataset = _open_training_data(config, data)
    probe = probe_set_for(config, dataset=dataset)
    module = build_module(config)

    recorded = config.to_dict()
    recorded["probe_image_size"] = recorded_image_size(config.resolved_probe_image_size)
    if isinstance(data, Dataset):
        recorded["data"] = dataset.describe() if hasattr(dataset, "describe") else type(dataset).__name__

    monitor = _build_monitor(config, probe.images, run_dir, recorded, listeners)
    _check_probe_fits_dse(monitor.compute_tokens(module), config, probe.image_size)

    loader = _training_loader(config, dataset, module)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = _build_trainer(
            config, run_dir, [monitor, *callbacks], len(loader), logger, trainer_kwargs,
            enable_progress_bar=enable_progress_bar,
        )
    except MisconfigurationException as error:  # e.g. accelerator "gpu" on a machine without one
        raise ValueError(f"device settings (accelerator {config.accelerator!r}, devices {config.devices!r}, "
                         f"strategy {config.strategy!r}): {error}") from error
    run_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:  # ranks are known once the Trainer exists
        write_config(run_dir, recorded)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=str(resume_from) if resume_from else None)
    return _result(run_dir, config, monitor, trainer, module)


def _result(run_dir: Path, config: "PretrainConfig", monitor: Any, trainer: Any, module: Any) -> RunResult:
    from dse_tune.runs import read_run

    record = monitor.tracker.run
    if not record.evaluations and trainer.world_size > 1 and (run_dir / LAST_CHECKPOINT).is_file():
        # ddp_spawn trained in child processes: this process's monitor saw nothing;
        # the run folder rank 0 wrote is the truth.
        record = read_run(run_dir)
    from dse_tune.decision import run_choice

    choice = run_choice(record)  # the one decision: what `dse-tune select` keeps
    chosen = None if choice.chosen is None else record.evaluations[choice.chosen]
    last_checkpoint = run_dir / LAST_CHECKPOINT
    return RunResult(
        run_dir=run_dir,
        config=config,
        history=record.to_dict(),
        chosen_checkpoint=None if chosen is None or chosen.checkpoint is None else run_dir / chosen.checkpoint,
        choice_reason=choice.reason,
        last_checkpoint=last_checkpoint if last_checkpoint.is_file() else None,
        epochs_completed=int(trainer.current_epoch),
        module=module,
        is_global_zero=bool(trainer.is_global_zero),
    )


def check_device_settings(config: "PretrainConfig") -> None:
    """Refuse device settings Lightning would reject late or unclearly (ValueError naming the field)."""
    import torch
    from lightning.pytorch.strategies import StrategyRegistry

    strategies = {"auto", *StrategyRegistry.available_strategies()}
    if config.strategy not in strategies:
        raise ValueError(f"strategy {config.strategy!r} is not a Lightning strategy; choose one of {sorted(strategies)}")
    on_cpu = config.accelerator == "cpu" or (config.accelerator == "auto" and not torch.cuda.is_available())
    if config.precision == "16-mixed" and on_cpu:
        raise ValueError(
            "precision '16-mixed' needs a CUDA GPU (float16 autocast with a gradient scaler); "
            "on CPU use precision 'bf16-mixed' or '32-true'"
        )


def _resolve_config(config: Any, data: str | Path | None) -> "PretrainConfig":
    """A validated PretrainConfig from a config object, a dict or a file; ``data`` overrides."""
    from dse_tune.pretrain_config import PretrainConfig

    if isinstance(config, (str, Path)):
        config = PretrainConfig.from_file(config)
    elif not isinstance(config, PretrainConfig):
        config = PretrainConfig.from_dict(config)
    if data is not None:
        config = config.replace(data=str(data))
    return config.validate()


def _resume_path(run_dir: Path, resume_from: str | Path | None) -> Path | None:
    if resume_from is None:
        return None
    path = run_dir / LAST_CHECKPOINT if str(resume_from) == "last" else Path(resume_from)
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: checkpoint {path} does not exist")
    return path


def _open_training_data(config: "PretrainConfig", data: Any) -> Any:
    from torch.utils.data import Dataset

    from dse_tune.data import check_images, dataset_for

    dataset = dataset_for(config, data if isinstance(data, Dataset) else None)
    check_images(dataset)  # every image, now: not a corrupt file mid-epoch
    devices = config.devices if isinstance(config.devices, int) and config.devices > 0 else 1
    devices = len(config.devices) if isinstance(config.devices, list) else devices
    if len(dataset) < config.batch_size * devices:
        per_device = f" on each of {devices} devices" if devices > 1 else ""
        raise ValueError(
            f"batch_size ({config.batch_size}{per_device}) exceeds the {len(dataset)} images of "
            f"{dataset.describe()}; lower batch_size (batches are full: drop_last)"
        )
    return dataset


def _build_monitor(
    config: "PretrainConfig", probe_images: Any, run_dir: Path, recorded: Mapping[str, Any], listeners: Sequence[Any]
) -> Any:
    """The run's DSEMonitor: the probe set, the config's rule (if early_stop), the listeners."""
    from dse_tune.ssl.monitor import DSEMonitor

    rule = None
    if config.early_stop:
        from dse_tune.degradation import DegradationRule

        try:
            rule = DegradationRule(**config.degradation)
        except TypeError as error:
            raise ValueError(f"degradation {config.degradation!r}: {error}") from error
    monitor = DSEMonitor(
        probe_images,
        run_dir=run_dir,
        every_n_epochs=config.eval_every_n_epochs,
        seed=config.probe_seed,
        save_last=True,
        early_stopping=rule,
        config=recorded,
        plot=True,
    )
    # Label-free warning when the components show a known failure signature (a
    # collapsed or regulariser-gamed run); it warns, never stops (docs/selection.md).
    from dse_tune.signals import failure_signature_listener

    monitor.add_listener(
        failure_signature_listener(run_name=run_dir.name, history=lambda: monitor.tracker.evaluations)
    )
    for listener in listeners:
        monitor.add_listener(listener)
    return monitor


def _training_loader(config: "PretrainConfig", dataset: Any, module: Any) -> Any:
    from torch.utils.data import DataLoader

    from dse_tune.ssl.views import ViewsDataset

    return DataLoader(
        ViewsDataset(dataset, module.build_transform()),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        persistent_workers=config.num_workers > 0,
    )


def _build_trainer(
    config: "PretrainConfig",
    run_dir: Path,
    callbacks: list[Any],
    batches_per_epoch: int,
    logger: Any,
    trainer_kwargs: Mapping[str, Any] | None,
    **arguments: Any,
) -> "pl.Trainer":
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    if logger is True:
        # One version folder per fit: Lightning's CSV writer deletes an existing
        # metrics.csv, which would lose the log of the run a resume continues.
        logger = CSVLogger(save_dir=str(run_dir), name="logs")
    arguments.update(
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=config.precision,
        max_epochs=config.epochs,
        callbacks=callbacks,
        logger=logger,
        enable_model_summary=False,
        # The monitor writes the checkpoints; Lightning's only if the caller adds one.
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        gradient_clip_val=config.gradient_clip_val,
        default_root_dir=str(run_dir),
        log_every_n_steps=max(1, min(50, batches_per_epoch)),
        num_sanity_val_steps=0,
    )
    arguments.update(trainer_kwargs or {})
    return pl.Trainer(**arguments)


def _check_probe_fits_dse(tokens: Any, config: "PretrainConfig", probe_size: tuple[int, int]) -> None:
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
            f"{num_tokens} tokens ({probe_size[0]}x{probe_size[1]} px, patch size {config.patch_size}): {error}"
        ) from error
