"""Run configuration: a typed schema, YAML loading and ``key=value`` overrides.

A configuration is a nested mapping (YAML file) validated against the dataclasses below. The
``data`` section is chosen by ``data.name`` (one dataclass per dataset). Every option can be set
from the command line with a dotted key, e.g. ``trainer.max_epochs=5 model.num_layers=2``; values
are parsed as YAML (``null``, ``true``, ``[0.5, 2.0]``, ``1e-3``). Unknown keys, wrong types and
unknown datasets raise :class:`ConfigError` with a message that names the key and suggests close
matches.

Example:
    >>> cfg = build_config({"data": {"name": "gravity"}}, ["model.num_layers=2", "optim.lr=1e-3"])
    >>> cfg.model.num_layers, cfg.optim.lr, cfg.data.max_points
    (2, 0.001, 10)
    >>> build_config({"data": {"name": "gravity"}}, ["model.num_layer=2"])
    Traceback (most recent call last):
    ...
    tfn.train.config.ConfigError: unknown config key 'model.num_layer'; did you mean 'model.num_layers'?
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union

__all__ = [
    "ConfigError",
    "Config",
    "TetrisData",
    "GravityData",
    "InertiaData",
    "ModelConfig",
    "OptimConfig",
    "TrainerConfig",
    "DATASETS",
    "build_config",
    "load_yaml",
    "parse_overrides",
    "config_to_dict",
    "save_config",
]


class ConfigError(ValueError):
    """A configuration key or value is not valid; the message names it."""


# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------


@dataclass
class TetrisData:
    """Tetris: 8 shapes of 4 cubes; train on one orientation each, test on random rotations."""

    name: Literal["tetris"] = "tetris"
    batch_size: int = 8
    #: copies of the 8 training shapes per epoch (the training set is 8 clouds).
    train_repeat: int = 32
    #: number of validation clouds (randomly rotated and translated shapes, cycling classes).
    num_val_rotations: int = 64
    #: number of test clouds (randomly rotated and translated shapes, cycling classes).
    num_rotations: int = 4000
    #: size of the random test-time translations.
    translate: float = 2.0
    eval_batch_size: int = 512
    num_workers: int = 0


@dataclass
class GravityData:
    """Gravity: predict each point's acceleration ("1o") from the masses ("1x0e")."""

    name: Literal["gravity"] = "gravity"
    batch_size: int = 16
    num_train: int = 2000
    num_val: int = 200
    num_test: int = 1000
    min_points: int = 2
    max_points: int = 10
    #: clouds of more points than seen in training, for validation and test ("*_large").
    num_large: int = 200
    large_min_points: int = 20
    large_max_points: int = 50
    box: float = 2.0
    min_separation: float = 0.5
    mass_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    G: float = 1.0
    #: size of the random translations applied (with random rotations) to validation/test sets.
    translate: float = 2.0
    eval_batch_size: int = 256
    num_workers: int = 0


@dataclass
class InertiaData:
    """Moment of inertia: predict the inertia tensor about the origin ("0e + 2e")."""

    name: Literal["inertia"] = "inertia"
    batch_size: int = 16
    num_train: int = 2000
    num_val: int = 200
    num_test: int = 1000
    num_points: int = 15
    box: float = 0.5
    translate: float = 2.0
    #: ``pool``: the network's pooled output (``model.pool`` sum/mean); ``origin``: the
    #: network's output at the origin point (the first point; ``model.pool=none``).
    readout: Literal["pool", "origin"] = "origin"
    eval_batch_size: int = 256
    num_workers: int = 0


DATASETS: dict[str, type] = {"tetris": TetrisData, "gravity": GravityData, "inertia": InertiaData}


@dataclass
class ModelConfig:
    """Arguments of :class:`tfn.nn.TensorFieldNetwork` (``null`` = the network's default).

    ``irreps_in``/``irreps_out`` are fixed by the dataset. ``pool`` defaults per dataset
    (tetris: sum, inertia: sum, gravity: none).
    """

    irreps_hidden: str | None = None
    num_layers: int | None = None
    lmax: int | None = None
    cutoff: float | None = None
    pool: Literal["sum", "mean", "none"] | None = None
    num_basis: int | None = None
    radial_basis: Literal["gaussian", "bessel"] | None = None
    max_radius: float | None = None
    nonlinearity: Literal["norm", "gate"] | None = None


@dataclass
class OptimConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    #: learning-rate schedule over ``trainer.max_epochs``: constant, cosine decay to ``min_lr``
    #: or reduce-on-plateau of the monitored validation metric.
    scheduler: Literal["none", "cosine", "plateau"] = "cosine"
    min_lr: float = 1e-4


@dataclass
class TrainerConfig:
    """Arguments of :class:`lightning.pytorch.Trainer`."""

    max_epochs: int = 50
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class Config:
    """A whole run. ``data`` is one of :class:`TetrisData`, :class:`GravityData`,
    :class:`InertiaData` (chosen by ``data.name``)."""

    data: TetrisData | GravityData | InertiaData
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    #: torch threads per process (``null`` = torch's default).
    num_threads: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


# ----------------------------------------------------------------------------------------------
# Parsing and validation
# ----------------------------------------------------------------------------------------------


def _yaml():
    try:
        import yaml
    except ImportError as e:  # pragma: no cover
        raise ImportError("tfn.train needs pyyaml: pip install 'tfn[train]'") from e
    return yaml


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file gives ``{}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = _yaml().safe_load(path.read_text())
    except Exception as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of options, got {type(raw).__name__}")
    return raw


def _parse_value(text: str) -> Any:
    try:
        return _yaml().safe_load(text) if text.strip() != "" else ""
    except Exception:
        return text


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=1", "c=x"]`` -> ``[("a.b", 1), ("c", "x")]`` (values parsed as YAML)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. trainer.max_epochs=5)"
            )
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        out.append((key, _parse_value(value)))
    return out


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(f"cannot set {key!r}: {prefix!r} is not a section")
        node = child
    node[parts[-1]] = value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {_type_name(arg)}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (with the usual int->float, "1e-3"->float leniency)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
    elif origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            close = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}{hint}"
            )
    elif origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        # Literal members first: they raise a specific message for near-miss strings.
        errors = []
        for arg in sorted(args, key=lambda a: typing.get_origin(a) is not Literal):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        lit = [e for e in errors if "is not one of" in str(e)]
        if lit and isinstance(value, str) and not any(a is str for a in args):
            raise lit[0]
    elif origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema error
        raise TypeError(f"unsupported schema type {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _unknown_key(
    key: str, known: list[str], where: str = "", depth: int | None = None
) -> ConfigError:
    """Error for an unknown ``key``; its part number ``depth`` (default: the last) is the
    unknown one, matched against ``known``."""
    parts = key.split(".")
    depth = len(parts) - 1 if depth is None else depth
    close = difflib.get_close_matches(parts[depth], known, n=3, cutoff=0.6)
    msg = f"unknown config key {key!r}"
    if where:
        msg += f" {where}"
    if close:
        sugg = " or ".join(repr(".".join(parts[:depth] + [c] + parts[depth + 1 :])) for c in close)
        msg += f"; did you mean {sugg}?"
    else:
        msg += f" (known keys: {', '.join(known)})"
    return ConfigError(msg)


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'config'}: expected a section (mapping), got {raw!r} "
            f"({type(raw).__name__})"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in raw:
        if key not in names:
            where = f"for dataset {raw.get('name')!r}" if cls in DATASETS.values() else ""
            raise _unknown_key(f"{prefix}{key}", names, where)
    kwargs = {}
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"missing required config key {key!r}")
            continue
        value = raw[f.name]
        if isinstance(tp, type) and is_dataclass(tp):
            kwargs[f.name] = _build(tp, {} if value is None else value, key + ".")
        else:
            kwargs[f.name] = _coerce(value, tp, key)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    """Value checks beyond types."""

    def positive(key: str, value: Any, allow_zero: bool = False) -> None:
        if value is None:
            return
        bad = value < 0 if allow_zero else value <= 0
        if bad:
            raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

    d = cfg.data
    for f in fields(d):
        v = getattr(d, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        positive(f"data.{f.name}", v, allow_zero=f.name in ("num_workers", "translate"))
    if isinstance(d, GravityData):
        if d.min_points < 2 or d.max_points < d.min_points:
            raise ConfigError("data.min_points/max_points: need 2 <= min_points <= max_points")
        if d.large_min_points < 2 or d.large_max_points < d.large_min_points:
            raise ConfigError("data.large_min_points/large_max_points: need 2 <= min <= max")
        if len(d.mass_range) != 2 or not 0 < d.mass_range[0] <= d.mass_range[1]:
            raise ConfigError(
                f"data.mass_range: expected [low, high] with 0 < low <= high, got {d.mass_range!r}"
            )
    m = cfg.model
    for name in ("num_basis", "max_radius", "cutoff"):
        positive(f"model.{name}", getattr(m, name))
    positive("model.lmax", m.lmax, allow_zero=True)
    positive("model.num_layers", m.num_layers, allow_zero=True)
    pool = "none" if m.pool is None else m.pool
    if d.name == "gravity" and pool != "none":
        raise ConfigError("model.pool: gravity predicts one vector per point; use pool=none")
    if d.name == "tetris" and pool == "none":
        raise ConfigError("model.pool: tetris predicts one output per cloud; use sum or mean")
    if isinstance(d, InertiaData):
        if d.readout == "pool" and pool == "none":
            raise ConfigError(
                "model.pool: inertia with data.readout=pool needs model.pool=sum or mean"
            )
        if d.readout == "origin" and pool != "none":
            raise ConfigError(
                "model.pool: inertia with data.readout=origin reads the output at the origin "
                "point; use model.pool=none"
            )
    positive("optim.lr", cfg.optim.lr)
    positive("optim.min_lr", cfg.optim.min_lr, allow_zero=True)
    positive("optim.weight_decay", cfg.optim.weight_decay, allow_zero=True)
    positive("trainer.max_epochs", cfg.trainer.max_epochs)
    positive("trainer.log_every_n_steps", cfg.trainer.log_every_n_steps)
    positive("trainer.check_val_every_n_epoch", cfg.trainer.check_val_every_n_epoch)
    positive("num_threads", cfg.num_threads)


_DEFAULT_POOL = {"tetris": "sum", "gravity": "none", "inertia": "sum"}


def build_config(raw: dict[str, Any] | None = None, overrides: list[str] | None = None) -> Config:
    """Validate a raw mapping (plus ``key=value`` overrides) into a :class:`Config`.

    Raises:
        ConfigError: unknown key, wrong type, unknown dataset or invalid value (the message
            names the key).
    """
    raw = copy.deepcopy(raw or {})
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping, got {type(raw).__name__}")
    sections = {f.name for f in fields(Config) if f.name in ("data", "model", "optim", "trainer")}
    for key, value in parse_overrides(list(overrides or [])):
        top = key.split(".")[0]
        known = [f.name for f in fields(Config)]
        if top not in known:
            raise _unknown_key(key, known, depth=0)
        if "." in key and top not in sections:
            raise ConfigError(f"cannot set {key!r}: {top!r} is not a section")
        _set_dotted(raw, key, value)

    data = raw.get("data")
    if not isinstance(data, dict):
        raise ConfigError(
            "missing config section 'data' (set data.name to one of: " + ", ".join(DATASETS) + ")"
        )
    name = data.get("name")
    if name is None:
        raise ConfigError("missing config key 'data.name' (one of: " + ", ".join(DATASETS) + ")")
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"data.name: unknown dataset {name!r} (known: {', '.join(DATASETS)}){hint}"
        )
    hints = {f.name: f for f in fields(Config)}
    for key in raw:
        if key not in hints:
            raise _unknown_key(key, list(hints))
    kwargs: dict[str, Any] = {"data": _build(DATASETS[name], data, "data.")}
    top_hints = typing.get_type_hints(Config)
    for f in fields(Config):
        if f.name == "data" or f.name not in raw:
            continue
        tp = top_hints[f.name]
        if isinstance(tp, type) and is_dataclass(tp):
            value = raw[f.name]
            kwargs[f.name] = _build(tp, {} if value is None else value, f.name + ".")
        else:
            kwargs[f.name] = _coerce(raw[f.name], tp, f.name)
    cfg = Config(**kwargs)
    if cfg.model.pool is None:
        cfg.model.pool = _DEFAULT_POOL[name]
        if isinstance(cfg.data, InertiaData) and cfg.data.readout == "origin":
            cfg.model.pool = "none"
    _check(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-able) of a config."""
    return asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(_yaml().safe_dump(config_to_dict(cfg), sort_keys=False))
