"""Typed configs: dotted overrides, their errors, JSON round trips, durations."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rnnkit.train.config import (
    ConfigError,
    apply_overrides,
    config_keys,
    from_dict,
    load_file,
    parse_duration,
    to_dict,
)
from rnnkit.train.tasks.charlm import CharLMConfig


@dataclass
class Inner:
    size: int = 3
    """a size"""
    rate: float = 0.5
    """a rate"""
    name: str = "lstm"
    """a name"""
    flag: bool = False
    """a flag"""
    limit: int | None = None
    """an optional limit"""


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    """the group"""
    seed: int = 0
    """the seed"""


def test_overrides_parse_each_type():
    config = apply_overrides(
        Outer(),
        [
            ("inner.size", "7"),
            ("inner.rate", "1e-3"),
            ("inner.name", "gru"),
            ("inner.flag", "true"),
            ("inner.limit", "12"),
            ("seed", "5"),
        ],
    )
    assert config == Outer(Inner(7, 1e-3, "gru", True, 12), 5)
    assert apply_overrides(config, [("inner.limit", "none")]).inner.limit is None


def test_overrides_do_not_change_the_original():
    original = Outer()
    apply_overrides(original, [("seed", "3")])
    assert original.seed == 0


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("inner.size", "big", "--inner.size expects an integer, got 'big'"),
        ("inner.size", "1.5", "expects an integer"),
        ("inner.rate", "fast", "--inner.rate expects a number"),
        ("inner.flag", "maybe", "--inner.flag expects true or false"),
        ("inner.sise", "3", "unknown config key 'inner.sise'; did you mean inner.size"),
        ("iner.size", "3", "unknown config key 'iner.size'.*did you mean inner"),
        ("inner", "3", "is a group of settings"),
        ("seed.value", "3", "'seed' is a value, not a group"),
    ],
)
def test_override_errors_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Outer(), [(key, value)])


def test_json_round_trip_and_type_checks():
    config = Outer(Inner(size=9, limit=4), seed=2)
    assert from_dict(Outer, to_dict(config)) == config
    assert from_dict(Outer, {"inner": {"rate": 1}}).inner.rate == 1.0
    with pytest.raises(ConfigError, match="inner.size must be int"):
        from_dict(Outer, {"inner": {"size": "9"}})
    with pytest.raises(ConfigError, match="unknown config key 'inner.colour'"):
        from_dict(Outer, {"inner": {"colour": 1}})


def test_keys_of_the_charlm_config():
    keys = config_keys(CharLMConfig)
    assert "model.recurrent.hidden_size" in keys and "model.recurrent.options" in keys
    assert "trainer.time_budget_seconds" in keys
    assert "seed" in keys


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("1h30m", 5400)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["five minutes", "5x", "", "0s"])
def test_bad_durations(text):
    with pytest.raises(ConfigError):
        parse_duration(text)


@dataclass
class Checked:
    size: int = 3
    """a positive size"""

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ConfigError(f"size must be positive, got {self.size}")


@dataclass
class HoldsChecked:
    group: Checked = field(default_factory=Checked)
    """the checked group"""


def test_post_init_errors_name_the_dotted_path():
    with pytest.raises(ConfigError, match=r"^group: size must be positive, got 0$"):
        from_dict(HoldsChecked, {"group": {"size": 0}})
    with pytest.raises(ConfigError, match=r"^group: size must be positive, got -1$"):
        apply_overrides(HoldsChecked(), [("group.size", "-1")])
    with pytest.raises(ConfigError, match=r"^size must be positive, got 0$"):
        from_dict(Checked, {"size": 0})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            [("model.recurrent.cell", "gru"), ("model.recurrent.options.peephole", "true")],
            r"^model.recurrent: option 'peephole' is not taken by the cell 'gru'; "
            r"its options: bias, input_dropout, .*zoneout, num_heads$",
        ),
        (
            [("model.recurrent.cell", "gla"), ("model.recurrent.options.num_heads", "four")],
            r"^model.recurrent: option 'num_heads' expects int, got 'four'$",
        ),
        (
            [("model.recurrent.cell", "gla"), ("model.recurrent.options.key_size", "big")],
            r"^model.recurrent: option 'key_size' expects int or NoneType, got 'big'$",
        ),
        (
            [("model.recurrent.strategy", "newton"),
             ("model.recurrent.strategy_options.max_iteration", "5")],
            r"^model.recurrent: strategy 'newton' got unknown option\(s\) max_iteration; "
            r"it takes: tolerance, max_iterations",
        ),
        (
            [("model.recurrent.strategy_options.tolerance", "1e-6")],
            r"^model.recurrent: strategy 'auto' got unknown option\(s\) tolerance; "
            r"it takes: no options$",
        ),
        (
            [("model.recurrent.options", "4")],
            r"^--model.recurrent.options is a mapping, not a value; set one entry",
        ),
        (
            [("model.recurrent.cell", "nope")],
            r"^model.recurrent: unknown cell 'nope'; registered cells: .*lstm",
        ),
        (
            [("model.recurrent.strategy", "nope")],
            r"^model.recurrent: unknown strategy 'nope'; registered",
        ),
        (
            [("model.recurrent.hidden_size", "0")],
            r"^model.recurrent: hidden_size must be positive, got 0$",
        ),
        ([("model.dropout", "1.0")], r"^model: dropout must be in \[0, 1\), got 1.0$"),
    ],
)
def test_model_config_errors_name_the_field_and_cell(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(CharLMConfig(), overrides)


def test_model_config_accepts_another_cell_without_lstm_options():
    config = apply_overrides(CharLMConfig(), [("model.recurrent.cell", "gru")])
    assert config.model.recurrent.cell == "gru" and config.model.recurrent.options == {}


def test_cell_options_from_the_command_line_reach_the_cell():
    from rnnkit.models import LanguageModel

    gla = apply_overrides(
        CharLMConfig(),
        [("model.recurrent.cell", "gla"), ("model.recurrent.hidden_size", "16"),
         ("model.recurrent.options.num_heads", "4"), ("model.recurrent.options.key_size", "none")],
    )
    assert gla.model.recurrent.options == {"num_heads": 4, "key_size": None}
    assert LanguageModel(gla.model, vocabulary_size=5).recurrent.cells[0].num_heads == 4
    lru = apply_overrides(
        CharLMConfig(),
        [("model.recurrent.cell", "lru"), ("model.recurrent.hidden_size", "8"),
         ("model.recurrent.options.r_min", "0.5"), ("model.recurrent.options.r_max", "1")],
    )
    assert lru.model.recurrent.options == {"r_min": 0.5, "r_max": 1.0}
    cell = LanguageModel(lru.model, vocabulary_size=5).recurrent.cells[0]
    assert (cell.r_min, cell.r_max) == (0.5, 1.0)
    # The resolved config keeps typed values, so it reads back equal.
    assert from_dict(CharLMConfig, to_dict(lru)) == lru


def test_strategy_options_from_the_command_line_reach_every_strategy_object():
    from rnnkit.models import LanguageModel
    from rnnkit.strategies.newton import NewtonStrategy

    config = apply_overrides(
        CharLMConfig(),
        [("model.recurrent.cell", "paragru"), ("model.recurrent.hidden_size", "8"),
         ("model.recurrent.num_layers", "2"), ("model.recurrent.strategy", "newton"),
         ("model.recurrent.strategy_options.max_iterations", "50"),
         ("model.recurrent.strategy_options.tolerance", "1e-6")],
    )
    assert config.model.recurrent.strategy_options == {"max_iterations": 50, "tolerance": 1e-6}
    strategies = LanguageModel(config.model, vocabulary_size=5).recurrent.strategies
    assert len(strategies) == 2 and strategies[0] is not strategies[1]
    for strategy in strategies:
        assert isinstance(strategy, NewtonStrategy)
        assert (strategy.max_iterations, strategy.tolerance) == (50, 1e-6)


def test_cell_options_from_a_file_are_checked_against_the_cell(tmp_path):
    path = tmp_path / "gla.yaml"
    path.write_text("model:\n  recurrent:\n    cell: gla\n    options:\n      num_heads: 2\n")
    assert load_file(CharLMConfig, path).model.recurrent.options == {"num_heads": 2}
    path.write_text("model:\n  recurrent:\n    cell: gla\n    options:\n      heads: 2\n")
    with pytest.raises(ConfigError, match=r"gla.yaml: model.recurrent: option 'heads' is not "
                       r"taken by the cell 'gla'; its options: bias, num_heads, key_size"):
        load_file(CharLMConfig, path)
    path.write_text("model:\n  recurrent:\n    options: 3\n")
    with pytest.raises(ConfigError, match=r"model.recurrent.options must be a mapping"):
        load_file(CharLMConfig, path)


def test_load_file_yaml_and_json_then_overrides(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("inner:\n  size: 7\n  name: gru\nseed: 3\n")
    json_file = tmp_path / "run.json"
    json_file.write_text('{"inner": {"rate": 0.25}}')
    from_yaml = load_file(Outer, yaml_file)
    assert (from_yaml.inner.size, from_yaml.inner.name, from_yaml.seed) == (7, "gru", 3)
    assert load_file(Outer, json_file).inner.rate == 0.25
    assert apply_overrides(from_yaml, [("inner.size", "9")]).inner.size == 9


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("bad.yaml", "inner:\n  sise: 7\n", r"bad.yaml: unknown config key 'inner.sise'"),
        ("bad.yaml", "inner:\n  size: [1\n", r"bad.yaml:3: not valid YAML"),
        ("bad.json", '{"seed": "x"}', r"bad.json: seed must be int, got 'x'"),
        ("bad.json", '{"seed": }', r"bad.json:1: not valid JSON"),
        ("bad.toml", "seed = 1", r"bad.toml: config files end in .yaml, .yml or .json"),
    ],
)
def test_load_file_errors_name_the_file_and_key(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_file(Outer, path)


def test_cli_config_file_with_overrides_on_top(tmp_path, capsys):
    import json

    from rnnkit.cli import main

    path = tmp_path / "charlm.yaml"
    path.write_text("model:\n  recurrent:\n    cell: gru\n    hidden_size: 32\n")
    command = ["train", "charlm", "--config", str(path)]
    assert main(command + ["--model.recurrent.num_layers=2", "--print-config"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]["recurrent"]
    assert (model["cell"], model["hidden_size"], model["num_layers"]) == ("gru", 32, 2)
    assert main(command + ["--model.recurrent.options.peephole=true"]) != 0
    assert "option 'peephole' is not taken by the cell 'gru'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, overrides, message",
    [
        ("reverse", [("model.encoder.num_layers", "0")],
         r"^model.encoder: num_layers must be positive, got 0$"),
        ("reverse", [("model.decoder.bidirectional", "true")],
         r"^model: decoder.bidirectional: a decoder runs forwards only, got true$"),
        ("reverse", [("model.encoder.options.heads", "2")],
         r"^model.encoder: option 'heads' is not taken by the cell 'lstm'; its options: "),
        ("reverse", [("model.dropout", "1.5")], r"^model: dropout: expected \[0, 1\), got 1.5$"),
        ("add", [("model.embedding_size", "0")],
         r"^model: embedding_size: expected a positive int, got 0$"),
        ("sort", [("model.glimpses", "-1")], r"^model: glimpses: expected 0 or more, got -1$"),
        ("tsp", [("model.recurrent.cell", "nope")], r"^model.recurrent: unknown cell 'nope'"),
        ("digit-strings", [("model.height_poolings", "9")],
         r"^model: height_poolings must lie in \[0, conv_layers=\d+\], got 9$"),
        ("digit-strings", [("model.recurrent.strategy", "nope")],
         r"^model.recurrent: unknown strategy 'nope'"),
    ],
)
def test_every_model_config_checks_its_ranges_when_read(task, overrides, message):
    from rnnkit.train.tasks import get_task

    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_task(task).config_type(), overrides)
