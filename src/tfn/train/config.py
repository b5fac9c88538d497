"""Run configuration on pydantic: a validated schema, YAML files and ``key=value`` overrides.

A configuration is a nested mapping (a YAML file) with the sections ``data``, ``model``,
``optim`` and ``trainer`` and a few top-level keys. ``data.name`` selects the task
(:mod:`tfn.tasks`); the ``data`` section is that task's options (its ``Data`` model) and the
``model`` section is derived from the signature of the task's model class (its arguments, types
and defaults, minus those the task sets itself), so the two can never drift apart. Every
option can be set from the command line with a dotted key, e.g. ``trainer.max_epochs=5
model.num_layers=2``; values are parsed as YAML (``null``, ``true``, ``[0.5, 2.0]``, ``1e-3``).
Unknown keys, wrong types and unknown tasks raise :class:`ConfigError`, one line that names the
key and suggests close matches; every section forbids extra keys.

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
import inspect
import re
import types
import typing
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from tfn.so3.irreps import Irreps, IrrepsLike
from tfn.tasks import Task, TaskData, available_tasks, get_task
from tfn.train.files import atomic_write_text

__all__ = [
    "ConfigError",
    "Config",
    "Section",
    "OptimConfig",
    "TrainerConfig",
    "build_config",
    "model_section",
    "load_yaml",
    "parse_overrides",
    "config_to_dict",
    "save_config",
]


class ConfigError(ValueError):
    """A configuration key or value is not valid; the message names it."""


# ------------------------------------------------------------------------------------ sections


def _allows(annotation: Any, kind: type) -> bool:
    """Whether ``annotation`` admits values of type ``kind`` (``bool``, ``None``...)."""
    if annotation is kind or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _allows(typing.get_args(annotation)[0], kind)
    if origin in (Union, types.UnionType):
        return any(_allows(a, kind) for a in typing.get_args(annotation))
    if origin is Literal:
        return any(isinstance(a, kind) for a in typing.get_args(annotation))
    return False


def _admits_string(annotation: Any, value: str) -> bool:
    """Whether the string ``value`` itself is valid for ``annotation`` (``str``, or a
    ``Literal`` listing it)."""
    if annotation is str or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin in (Union, types.UnionType, Annotated):
        return any(_admits_string(a, value) for a in typing.get_args(annotation))
    return False


class Section(BaseModel):
    """A config section: extra keys forbidden; ``"none"`` means ``null`` where ``null`` is
    allowed; booleans are not numbers (``true`` is not 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _literals(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, value in data.items():
            info = cls.model_fields.get(name)
            if info is None:
                continue
            if (
                isinstance(value, str)
                and value.lower() == "none"
                and _allows(info.annotation, type(None))
                and not _admits_string(info.annotation, value)
            ):
                data[name] = None
            if isinstance(value, bool) and not _allows(info.annotation, bool):
                raise ValueError(
                    f"{name}: expected {_type_name(info.annotation)}, got {value!r} (bool)"
                )
        return data


class OptimConfig(Section):
    """The optimiser and the learning-rate schedule."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "cosine", "plateau"] = Field(
        "cosine",
        description="constant, cosine decay to min_lr over trainer.max_epochs (or, with "
        "max_epochs=-1, over the trainer.max_time budget), or reduce-on-plateau of the "
        "monitored validation metric",
    )
    min_lr: float = Field(1e-4, ge=0)
    patience: int = Field(5, ge=0, description="plateau: epochs without improvement")
    factor: float = Field(0.5, gt=0, lt=1, description="plateau: learning-rate factor")
    ema_decay: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="exponential moving average of the weights (e.g. 0.99): validated, tested "
        "and loaded instead of the raw weights",
    )


_MAX_TIME = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")


def _check_max_time(value: str | None) -> str | None:
    if value is not None and not _MAX_TIME.match(value):
        raise ValueError(f"expected DD:HH:MM:SS (e.g. 00:00:30:00 for 30 minutes), got {value!r}")
    return value


class TrainerConfig(Section):
    """Arguments of :class:`lightning.pytorch.Trainer`."""

    max_epochs: int = Field(50, ge=-1, description="-1: no limit (with max_time)")
    max_time: Annotated[str | None, AfterValidator(_check_max_time)] = Field(
        None, description="wall-clock budget DD:HH:MM:SS (Lightning's format)"
    )
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, gt=0)
    gradient_clip_val: float | None = Field(None, gt=0)
    log_every_n_steps: int = Field(10, gt=0)
    check_val_every_n_epoch: int = Field(1, gt=0)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    enable_progress_bar: bool = True
    deterministic: bool = False
    snapshot_minutes: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=list,
        description="also keep checkpoints/minutes_M.ckpt when training time passes M minutes "
        "(a learning curve against wall time: tfn evaluate RUN --checkpoint minutes_M)",
    )

    @field_validator("max_epochs")
    @classmethod
    def _epochs(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be >= 1 (or -1 for no limit)")
        return value


def _irreps_string(value: Any) -> str:
    return str(Irreps(value))


#: How a model argument's annotation appears in the config schema.
_IrrepsField = Annotated[str, AfterValidator(_irreps_string)]


def _config_type(annotation: Any) -> Any:
    """The schema type of a model argument: irreps as strings (parsed, so typos fail early),
    mappings as dicts, sequences as lists."""
    if annotation is IrrepsLike or annotation == IrrepsLike:
        return _IrrepsField
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if any(a is Irreps or a is IrrepsLike for a in args) or (str in args and Iterable in args):
            rest = [a for a in args if a not in (str, Irreps, Iterable) and a is not IrrepsLike]
            return Union[tuple([_IrrepsField, *[_config_type(a) for a in rest]])]  # noqa: UP007
        return Union[tuple(_config_type(a) for a in args)]  # noqa: UP007
    if origin in (Mapping, typing.Mapping) or origin is dict:
        k, v = args if args else (str, Any)
        return dict[_config_type(k), _config_type(v)]
    if origin in (Sequence, typing.Sequence) or origin is list:
        (item,) = args if args else (Any,)
        return list[_config_type(item)]
    return annotation


@cache
def model_section(task: type[Task]) -> type[Section]:
    """The ``model`` section of a task: the arguments of ``task.model_class`` (names, types,
    defaults) minus ``task.model_fixed``."""
    cls = task.model_class
    signature = inspect.signature(cls.__init__)
    # IrrepsLike names "Irreps" by a forward reference: resolve it whatever the model imports.
    hints = typing.get_type_hints(cls.__init__, localns={"Irreps": Irreps})
    fields: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or name in task.model_fixed:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        tp = _config_type(hints.get(name, Any))
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (tp, default)
    with warnings.catch_warnings():
        # A model argument may share a name with a (deprecated) BaseModel method, e.g.
        # `validate`; the field wins, which is what the config wants.
        warnings.filterwarnings("ignore", message=".*shadows an attribute in parent.*")
        section = create_model(
            _section_name(task),
            __base__=Section,
            __doc__=f"Arguments of {cls.__module__}.{cls.__qualname__}.",
            __module__=__name__,
            **fields,
        )
    return section


def _section_name(task: type[Task]) -> str:
    return f"{task.__name__}ModelSection"


def __getattr__(name: str) -> Any:
    # Model sections are made at run time; this finds them by name so that configs pickle
    # (e.g. into the worker processes of ddp_spawn).
    if name.endswith("ModelSection"):
        for task_name in available_tasks():
            task = get_task(task_name)
            if _section_name(task) == name:
                return model_section(task)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Config(BaseModel):
    """A whole run: the task's ``data`` options, the ``model`` arguments, ``optim``,
    ``trainer``, and the seed, dtype and threads."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    data: SerializeAsAny[TaskData]
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float32"
    num_threads: int | None = Field(None, gt=0, description="torch threads per process")
    model: SerializeAsAny[Section]
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @property
    def task(self) -> type[Task]:
        return get_task(self.data.name)

    def model_arguments(self) -> dict[str, Any]:
        """The ``model`` section as keyword arguments of the model class."""
        return {k: getattr(self.model, k) for k in type(self.model).model_fields}


_SECTIONS = {"optim": OptimConfig, "trainer": TrainerConfig}
_TOP_LEVEL = ["data", "seed", "dtype", "num_threads", "model", "optim", "trainer"]


# ------------------------------------------------------------------------------- error messages


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return "list"
    return getattr(tp, "__name__", str(tp))


_EXPECTED = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "string": "str",
    "list": "list",
    "tuple": "list",
    "dict": "mapping",
    "model": "section (mapping)",
}


def _unknown_key(
    key: str, known: Sequence[str], where: str = "", depth: int | None = None
) -> ConfigError:
    """Error for an unknown ``key`` whose part number ``depth`` (default: the last) is not
    among ``known``, with the closest matches."""
    parts = key.split(".")
    depth = len(parts) - 1 if depth is None else depth
    close = difflib.get_close_matches(parts[depth], list(known), n=3, cutoff=0.6)
    msg = f"unknown config key {key!r}"
    if where:
        msg += f" {where}"
    if close:
        sugg = " or ".join(repr(".".join(parts[:depth] + [c] + parts[depth + 1 :])) for c in close)
        msg += f"; did you mean {sugg}?"
    else:
        msg += f" (known keys: {', '.join(known)})"
    return ConfigError(msg)


def _format_error(error: dict[str, Any], prefix: str, section: type[BaseModel]) -> str:
    loc = [str(p) for p in error["loc"]]
    # Union members appear in the location as type names; keep the field path only.
    path = [
        p
        for p in loc
        if not (p[:1].isupper() or "[" in p or p in _EXPECTED or p.startswith("function-"))
    ]
    key = ".".join([prefix, *path]) if prefix else ".".join(path)
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        known = list(section.model_fields)
        where = ""
        if prefix == "data" and "name" in section.model_fields:
            where = f"for dataset {section.model_fields['name'].default!r}"
        return str(_unknown_key(key, known, where))
    if kind == "missing":
        return f"missing required config key {key!r}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        choices = re.findall(r"'([^']*)'", expected)
        hint = ""
        if isinstance(value, str):
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{key}: {value!r} is not one of {expected}{hint}"
    head = kind.split("_")[0]
    if head in _EXPECTED and kind.endswith(("_type", "_parsing", "_from_float")):
        return f"{key}: expected {_EXPECTED[head]}, got {value!r} ({type(value).__name__})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        limit = next(iter(error.get("ctx", {}).values()), "")
        return f"{key}: must be {op} {limit}, got {value!r}"
    msg = str(error.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if re.match(r"^[\w.]+: ", msg):  # a validator that names its own key
        name = msg.split(":", 1)[0]
        if name.startswith(prefix + ".") or "." in name:
            return msg
        return f"{prefix}.{msg}" if prefix else msg
    return f"{key}: {msg}" if key else msg


def _validate(section: type[BaseModel], raw: Any, prefix: str) -> BaseModel:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{prefix}: expected a section (mapping), got {raw!r} ({type(raw).__name__})"
        )
    try:
        return section.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(
            "; ".join(_format_error(err, prefix, section) for err in e.errors())
        ) from None


# ----------------------------------------------------------------------------- files, overrides


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
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
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


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
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


# --------------------------------------------------------------------------------------- build


def build_config(
    raw: Mapping[str, Any] | None = None, overrides: Sequence[str] | None = None
) -> Config:
    """Validate a raw mapping (plus ``key=value`` overrides) into a :class:`Config`.

    Raises:
        ConfigError: unknown key, wrong type, unknown task or invalid value (one line that
            names the key).
    """
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"config: expected a mapping, got {type(raw).__name__}")
    raw = copy.deepcopy(dict(raw or {}))
    for key, value in parse_overrides(list(overrides or [])):
        top = key.split(".")[0]
        if top not in _TOP_LEVEL:
            raise _unknown_key(key, _TOP_LEVEL, depth=0)
        if "." in key and top not in ("data", "model", "optim", "trainer"):
            raise ConfigError(f"cannot set {key!r}: {top!r} is not a section")
        _set_dotted(raw, key, value)
    for key in raw:
        if key not in _TOP_LEVEL:
            raise _unknown_key(str(key), _TOP_LEVEL)

    tasks = available_tasks()
    data = raw.get("data")
    if not isinstance(data, dict):
        raise ConfigError(
            f"missing config section 'data' (set data.name to one of: {', '.join(tasks)})"
        )
    name = data.get("name")
    if name is None:
        raise ConfigError(f"missing config key 'data.name' (one of: {', '.join(tasks)})")
    if name not in tasks:
        close = difflib.get_close_matches(str(name), tasks, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"data.name: unknown dataset {name!r} (known: {', '.join(tasks)}){hint}")
    task = get_task(name)
    values: dict[str, Any] = {"data": _validate(task.Data, data, "data")}
    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict):
        raise ConfigError(f"model: expected a section (mapping), got {model_raw!r}")
    defaults = task.default_model_arguments(values["data"])
    values["model"] = _validate(model_section(task), {**defaults, **model_raw}, "model")
    for section, cls in _SECTIONS.items():
        values[section] = _validate(cls, raw.get(section), section)
    for key in ("seed", "dtype", "num_threads"):
        if key in raw:
            values[key] = raw[key]
    try:
        cfg = Config.model_validate(values)
    except ValidationError as e:
        raise ConfigError("; ".join(_format_error(err, "", Config) for err in e.errors())) from None
    try:
        task.check_config(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-able) of a config."""
    return cfg.model_dump(mode="json")


def save_config(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML (every option, defaults filled in), written atomically."""
    atomic_write_text(path, _yaml().safe_dump(config_to_dict(cfg), sort_keys=False))
