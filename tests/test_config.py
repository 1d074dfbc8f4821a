"""The YAML + dotted-override config loader and the training config built on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from textrec import config as configlib
from textrec.config import ConfigError
from textrec.training.config import TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Inner:
    size: int = 3
    rate: float = 0.5
    on: bool = False
    names: tuple[str, ...] = ("a",)
    limit: int | None = None


@dataclass(frozen=True)
class Outer:
    title: str = "x"
    inner: Inner = field(default_factory=Inner)
    options: dict = field(default_factory=dict)


def test_defaults_come_from_the_dataclasses_when_nothing_overrides_them():
    assert configlib.load(Outer) == Outer()


def test_yaml_overrides_only_what_it_names(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  size: 7\n")
    cfg = configlib.load(Outer, p)
    assert cfg.inner.size == 7 and cfg.inner.rate == 0.5 and cfg.title == "x"


def test_dotted_overrides_parse_by_field_type(tmp_path):
    cfg = configlib.load(Outer, None, ["--inner.size=12", "inner.rate=1e-3", "--inner.on=true",
                                       "--inner.names=b,c", "--inner.limit=null", "--title=hello world"])
    assert cfg.inner == Inner(size=12, rate=0.001, on=True, names=("b", "c"), limit=None)
    assert isinstance(cfg.inner.size, int) and isinstance(cfg.inner.rate, float)
    assert cfg.title == "hello world"


def test_list_overrides_accept_yaml_brackets():
    assert configlib.load(Outer, None, ["--inner.names=[p, q]"]).inner.names == ("p", "q")


def test_option_bags_take_yaml_scalars():
    cfg = configlib.load(Outer, None, ["--options.hidden=256", "--options.rate=0.1", "--options.flag=false",
                                       "--options.sizes=[1, 2]"])
    assert cfg.options == {"hidden": 256, "rate": 0.1, "flag": False, "sizes": [1, 2]}


def test_later_overrides_win_over_yaml_and_earlier_ones(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner: {size: 7}\n")
    assert configlib.load(Outer, p, ["--inner.size=8", "--inner.size=9"]).inner.size == 9


def test_unknown_key_names_the_key_and_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        configlib.load(Outer, None, ["--inner.sise=3"])
    assert "inner.sise" in str(e.value) and "size" in str(e.value) and "rate" in str(e.value)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("inner:\n  colour: red\n")
    with pytest.raises(ConfigError, match="bad.yaml.*inner.colour"):
        configlib.load(Outer, p)


@pytest.mark.parametrize("override, message", [
    ("--inner.size=three", "inner.size: expected int"),
    ("--inner.on=maybe", "inner.on: expected a boolean"),
    ("--inner.size", "expected KEY=VALUE"),
    ("--inner=3", "inner is a section"),
    ("--title.sub=3", "title is a value"),
])
def test_bad_overrides_explain_what_was_expected(override, message):
    with pytest.raises(ConfigError, match=message):
        configlib.load(Outer, None, [override])


def test_yaml_type_errors_are_caught(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("inner:\n  size: 2.5\n")
    with pytest.raises(ConfigError, match="inner.size: expected an integer"):
        configlib.load(Outer, p)


def test_missing_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        configlib.load(Outer, tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        configlib.load(Outer, p)


def test_to_dict_round_trips_through_from_dict():
    cfg = configlib.load(Outer, None, ["--inner.size=5", "--options.k=1"])
    assert configlib.from_dict(Outer, configlib.to_dict(cfg)) == cfg


def test_replace_changes_nested_fields():
    cfg = configlib.replace(Outer(), **{"inner.size": 4, "title": "t"})
    assert cfg.inner.size == 4 and cfg.title == "t" and cfg.inner.rate == 0.5


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu.yaml", "smoke.yaml"])
def test_shipped_recipes_load(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.name == "line_cnn_lstm"


def test_training_overrides_reach_the_model_options():
    cfg = load_config(CONFIGS / "smoke.yaml", ["--loop.epochs=3", "--model.options.lstm_hidden=24"])
    assert cfg.loop.epochs == 3 and cfg.model.options["lstm_hidden"] == 24
    assert cfg.model.options["features"] == 48  # the rest of the YAML's options stay


def test_unknown_model_option_is_rejected_with_the_valid_ones():
    with pytest.raises(ConfigError, match="model.options.hidden.*lstm_hidden"):
        load_config(CONFIGS / "smoke.yaml", ["--model.options.hidden=256"])


def test_unknown_model_is_rejected_with_the_known_ones():
    with pytest.raises(KeyError, match="line_cnn_lstm"):
        load_config(None, ["--model.name=nope"])


def test_invalid_values_are_rejected_by_the_dataclasses():
    with pytest.raises(ConfigError, match="data.mode must be one of"):
        load_config(None, ["--data.mode=magic"])
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(None, ["--optim.schedule=zigzag"])


def test_the_gpu_recipe_normalises_lines_as_the_cpu_recipe_does():
    """The stem settings chosen on real handwriting are about pen strokes, not hardware: both recipes
    carry them, the stroke width scaled to each recipe's height."""
    cpu, gpu = load_config(CONFIGS / "cpu.yaml").stem, load_config(CONFIGS / "gpu.yaml").stem
    assert cpu.core > 0 and (gpu.core, gpu.spacing, gpu.narrowest) == (cpu.core, cpu.spacing, cpu.narrowest)
    assert gpu.stroke / gpu.height == pytest.approx(cpu.stroke / cpu.height)
    cpu_decode, gpu_decode = load_config(CONFIGS / "cpu.yaml").decode, load_config(CONFIGS / "gpu.yaml").decode
    assert (gpu_decode.choose, gpu_decode.lm_corpus) == (cpu_decode.choose, cpu_decode.lm_corpus)
