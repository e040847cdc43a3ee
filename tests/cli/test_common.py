"""What the subcommands share: here, the deprecated spelling of a renamed option."""

from __future__ import annotations

import pytest

from dse_tune.cli.main import build_parser

# DSE's seed was `--seed` on track, score and rescore, while `pretrain --seed` seeds training.
RENAMED = [
    ("track", ["CKPTS", "--arch", "vit_tiny_patch16_224", "--out", "run"]),
    ("score", []),
    ("rescore", ["RUN_DIR"]),
]


@pytest.mark.parametrize("command, required", RENAMED, ids=[name for name, _ in RENAMED])
def test_the_old_seed_flag_still_sets_the_dse_seed_and_warns(command, required, capsys):
    parser = build_parser(commands=[command])
    assert parser.parse_args([command, *required, "--dse-seed", "7"]).dse_seed == 7
    assert capsys.readouterr().err == ""
    assert parser.parse_args([command, *required, "--seed", "5"]).dse_seed == 5
    assert capsys.readouterr().err == (
        "warning: --seed is deprecated and will be removed in the next release; use --dse-seed\n"
    )
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    shown = capsys.readouterr().out
    assert "--dse-seed" in shown and "--seed" not in shown.replace("--dse-seed", "").replace("--synthetic-seed", "")


def test_pretrain_seed_is_the_training_seed():
    args = build_parser(commands=["pretrain"]).parse_args(["pretrain", "--out", "run", "--seed", "3"])
    assert args.seed == 3 and not hasattr(args, "dse_seed")
