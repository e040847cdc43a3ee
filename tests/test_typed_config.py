"""The one typed config reader: YAML numbers, field typing, errors that name field, value and type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from dse_tune.pretrain_config import PretrainConfig
from dse_tune.search_space import SearchSpaceError, parse_search_space
from dse_tune.typed_config import (
    PARSE,
    ConfigValueError,
    load_yaml,
    parse_assignment,
    parse_image_size,
    read_config_file,
    typed_fields,
)


@dataclass
class Settings:
    rate: float = 0.1
    steps: int = 1
    name: str = "a"
    scale: tuple[float, float] = (0.4, 1.0)
    splits: tuple[str, ...] | None = None
    devices: int | str | list[int] = 1
    extra: dict[str, Any] = field(default_factory=dict)
    size: Any = field(default=None, metadata={PARSE: parse_image_size})


@pytest.mark.parametrize("text", ["1e-4", "1E-4", "1.0e-4", "+1e-4", "0.0001"])
def test_every_spelling_of_a_small_number_is_a_float(text):
    assert load_yaml(f"rate: {text}") == {"rate": 1e-4}
    assert parse_assignment(f"rate={text}") == ("rate", 1e-4)
    # Also where a plain yaml.safe_load left a string behind.
    assert typed_fields(Settings, {"rate": text}) == {"rate": 1e-4}


def test_values_take_their_declared_types():
    typed = typed_fields(Settings, {"rate": 2, "steps": 3, "scale": [0, 1], "splits": ["train"], "devices": [0, 1],
                                    "extra": {"min_drop": 5e-2}, "size": "24x32"})
    assert typed == {"rate": 2.0, "steps": 3, "scale": (0.0, 1.0), "splits": ("train",), "devices": [0, 1],
                     "extra": {"min_drop": 0.05}, "size": (24, 32)}
    assert isinstance(typed["rate"], float)
    # An exact match wins over a conversion: "auto" stays text, 2 stays a count.
    assert typed_fields(Settings, {"devices": "auto"})["devices"] == "auto"
    assert typed_fields(Settings, {"devices": 2})["devices"] == 2


@pytest.mark.parametrize(("values", "message"), [
    ({"rate": "fast"}, "rate: expected a number, got 'fast' (a string)"),
    ({"rate": True}, "rate: expected a number, got True (true/false)"),
    ({"steps": 2.5}, "steps: expected an integer, got 2.5 (float)"),
    ({"name": 3}, "name: expected a string, got 3 (int)"),
    ({"scale": [0.3]}, "scale: expected a list of 2 numbers, got [0.3] (a list)"),
    ({"splits": [1]}, "splits: expected a list of strings or null, got [1] (a list)"),
    ({"size": "12x"}, "size: image size '12x' is not N, HxW (e.g. 96x128) or 'native'"),
    ({"rates": 1}, "unknown Settings field(s) ['rates'] (did you mean 'rate'?)"),
])
def test_a_bad_value_names_the_field_the_value_and_the_type(values, message):
    with pytest.raises(ConfigValueError) as raised:
        typed_fields(Settings, values)
    assert str(raised.value) == message


def test_files_name_themselves_and_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-4\nglobal_crop_scale: [0.3, 1]\n")
    assert read_config_file(path, PretrainConfig) == {"lr": 1e-4, "global_crop_scale": (0.3, 1.0)}
    path.write_text("lr: [1, 2]\n")
    with pytest.raises(ConfigValueError, match=r"run\.yaml: lr: expected a number, got \[1, 2\]"):
        read_config_file(path, PretrainConfig)
    path.write_text("lr: {unclosed\n")
    with pytest.raises(ConfigValueError, match=r"run\.yaml: not valid YAML"):
        read_config_file(path, PretrainConfig)
    with pytest.raises(ConfigValueError, match=r"missing\.yaml: cannot read it"):
        read_config_file(tmp_path / "missing.yaml", PretrainConfig)
    path.write_text("- a list\n")
    with pytest.raises(ConfigValueError, match="must hold a mapping"):
        read_config_file(path, PretrainConfig)


def test_the_three_sources_agree_on_pretrain_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1E-4\nprecision: 32\nprobe_image_size: native\n")
    from_file = PretrainConfig.from_file(path)
    from_set = PretrainConfig.from_dict(dict(parse_assignment(t) for t in ("lr=1E-4", "precision=32",
                                                                           "probe_image_size=native")))
    spec = parse_search_space({"pretrain": {"lr": "1E-4", "precision": 32, "probe_image_size": "native"}})
    from_space = spec.trial_config({})
    assert from_file == from_set == from_space
    assert (from_file.lr, from_file.precision, from_file.resolved_probe_image_size) == (1e-4, "32", "native")
    with pytest.raises(SearchSpaceError, match=r"pretrain\.lr \(choice option\): expected a number, got 'fast'"):
        parse_search_space({"pretrain": {"lr": {"choice": [1e-4, "fast"]}}})
