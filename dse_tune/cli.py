"""Command line: ``dse-tune pretrain | score | sweep | select | validate | demo``.

Each subcommand lives next to the code it drives; this module only wires argparse and
imports lazily so that ``dse-tune --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help). The module provides add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "pretrain": ("dse_tune.ssl.pretrain", "self-supervised pretraining with DSE monitoring"),
    "score": ("dse_tune.score", "DSE of a model's dense features on a folder or the embedded scenes"),
    "sweep": ("dse_tune.sweep", "label-free hyperparameter sweep (Ray Tune + Optuna)"),
    "select": ("dse_tune.selection_cli", "pick the checkpoint and beta from a run or sweep"),
    "rescore": ("dse_tune.rescore", "score a sweep's candidate checkpoints on the same held-out images"),
    "validate": ("dse_tune.validate", "check label-free scores against a labelled probe"),
    "demo": ("dse_tune.demo", "the embedded end-to-end demo (no download, no labels)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dse-tune", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            sub_parser.set_defaults(_unavailable=f"'dse-tune {name}' is not available in this build")
            continue
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        parser.error(args._unavailable)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
