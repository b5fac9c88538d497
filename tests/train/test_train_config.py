"""Config schema: files, overrides, and clear errors that name the bad key or value."""

from __future__ import annotations

import pytest
from train_helpers import config_path

from tfn.tasks.gravity import GravityData
from tfn.tasks.inertia import InertiaData
from tfn.tasks.tetris import TetrisData
from tfn.train.config import (
    ConfigError,
    build_config,
    config_to_dict,
    load_yaml,
    model_section,
    save_config,
)


@pytest.mark.parametrize(
    "name, cls", [("tetris", TetrisData), ("gravity", GravityData), ("inertia", InertiaData)]
)
def test_shipped_configs_validate(name, cls):
    cfg = build_config(load_yaml(config_path(name)))
    assert isinstance(cfg.data, cls)
    assert cfg.data.name == name
    assert cfg.model.pool == {"tetris": "sum", "gravity": None, "inertia": None}[name]


def test_dotted_overrides_and_types():
    cfg = build_config(
        {"data": {"name": "gravity"}},
        [
            "trainer.max_epochs=5",
            "model.num_layers=2",
            "optim.lr=1e-3",  # YAML 1.1 reads this as a string: coerced to float
            "model.cutoff=null",
            "data.mass_range=[1, 3]",
            "trainer.devices=2",
            "trainer.enable_progress_bar=false",
            "dtype=float64",
        ],
    )
    assert cfg.trainer.max_epochs == 5 and cfg.model.num_layers == 2
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.model.cutoff is None
    assert tuple(cfg.data.mass_range) == (1.0, 3.0)
    assert cfg.trainer.devices == 2 and cfg.trainer.enable_progress_bar is False
    assert cfg.dtype == "float64"


def test_round_trip(tmp_path):
    cfg = build_config({"data": {"name": "tetris"}}, ["seed=3", "model.irreps_hidden=4x0e+2x1o"])
    save_config(cfg, tmp_path / "c.yaml")
    again = build_config(load_yaml(tmp_path / "c.yaml"))
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize(
    "raw, overrides, expected",
    [
        # unknown keys, with close matches suggested
        ({"data": {"name": "tetris"}}, ["model.num_layer=2"], "did you mean 'model.num_layers'"),
        ({"data": {"name": "tetris"}}, ["trainer.max_epoch=2"], "'trainer.max_epochs'"),
        ({"data": {"name": "tetris"}}, ["optimizer.lr=1"], "did you mean 'optim.lr'"),
        ({"data": {"name": "tetris"}, "sede": 1}, [], "did you mean 'seed'"),
        # a key of another dataset
        ({"data": {"name": "tetris"}}, ["data.num_points=3"], "for dataset 'tetris'"),
        # wrong types
        (
            {"data": {"name": "tetris"}},
            ["trainer.max_epochs=abc"],
            "trainer.max_epochs: expected int",
        ),
        ({"data": {"name": "tetris"}}, ["trainer.max_epochs=2.5"], "expected int, got 2.5"),
        ({"data": {"name": "tetris"}}, ["optim.lr=fast"], "optim.lr: expected float"),
        ({"data": {"name": "tetris"}}, ["trainer.enable_progress_bar=3"], "expected bool"),
        ({"data": {"name": "tetris"}}, ["dtype=float16"], "dtype: 'float16' is not one of"),
        ({"data": {"name": "tetris"}}, ["model.nonlinearity=gated"], "did you mean 'gate'"),
        ({"data": {"name": "tetris"}, "model": 3}, [], "model: expected a section"),
        # datasets
        ({"data": {"name": "tetirs"}}, [], "unknown dataset 'tetirs'"),
        ({"data": {"name": "tetirs"}}, [], "did you mean 'tetris'"),
        ({}, [], "data.name"),
        # values
        ({"data": {"name": "tetris"}}, ["optim.lr=-1"], "optim.lr: must be > 0"),
        ({"data": {"name": "gravity"}}, ["model.pool=sum"], "model.pool"),
        ({"data": {"name": "tetris"}}, ["model.pool=none"], "model.pool"),
        ({"data": {"name": "inertia"}}, ["data.readout=origin", "model.pool=sum"], "pool=none"),
        # override syntax
        ({"data": {"name": "tetris"}}, ["trainer.max_epochs"], "key=value"),
        ({"data": {"name": "tetris"}}, ["seed.x=1"], "'seed' is not a section"),
    ],
)
def test_errors_name_the_key(raw, overrides, expected):
    with pytest.raises(ConfigError) as info:
        build_config(raw, overrides)
    assert expected in str(info.value)


def test_inertia_origin_readout_defaults_pool():
    cfg = build_config({"data": {"name": "inertia", "readout": "origin"}})
    assert cfg.model.pool is None
    assert build_config({"data": {"name": "inertia", "readout": "pool"}}).model.pool == "sum"


def test_old_spellings_keep_working():
    # `pool: none` (a string) was how configs said "per point"; it still means null.
    cfg = build_config({"data": {"name": "gravity"}, "model": {"pool": "none"}})
    assert cfg.model.pool is None


def test_model_section_is_the_model_signature():
    """The model section is derived from the model class: every argument but those the task
    sets, with the model's own defaults (so the two cannot drift apart)."""
    import inspect

    from tfn.models import EnergyModel, TensorFieldNetwork
    from tfn.tasks import get_task

    tetris = get_task("tetris")
    fields = model_section(tetris).model_fields
    params = inspect.signature(TensorFieldNetwork).parameters
    assert set(fields) == set(params) - {"irreps_in", "irreps_out"}
    for name, field in fields.items():
        assert field.default == params[name].default, name
    cfg = build_config({"data": {"name": "tetris"}})
    assert cfg.model.pool == "sum"  # the task's own default
    assert cfg.model.lmax == params["lmax"].default
    # a config key per argument, also for a model added later
    assert "species" not in inspect.signature(TensorFieldNetwork).parameters
    assert "species" in inspect.signature(EnergyModel).parameters


def test_bad_irreps_are_caught_by_the_schema():
    with pytest.raises(ConfigError, match="model.irreps_hidden"):
        build_config({"data": {"name": "tetris"}}, ["model.irreps_hidden=16x0e+4y1o"])


def test_max_time_format():
    cfg = build_config({"data": {"name": "tetris"}}, ["trainer.max_time=00:00:30:00"])
    assert cfg.trainer.max_time == "00:00:30:00"
    with pytest.raises(ConfigError, match="DD:HH:MM:SS"):
        build_config({"data": {"name": "tetris"}}, ["trainer.max_time=30min"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(listy)
