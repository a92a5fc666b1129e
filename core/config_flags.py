"""Run configurations as dataclasses whose fields carry help text, turned into CLI flags and back.

A field's metadata may hold `help`, `type` (the argparse type, needed for `X | None` fields), `choices`,
`flag` (the flag name when it differs from the field's), `nargs` and `required`. Booleans become
`--x/--no-x`, and so do `bool | None` fields with `type: bool` (None: neither flag given, decide later).
The resolved config (every default filled in) is what lineage.json records.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_config_args(
    parser: argparse.ArgumentParser,
    config_cls: type,
    *,
    skip: tuple[str, ...] = (),
    deferred: dict[str, str] | None = None,
) -> None:
    """One flag per field of `config_cls` (except those in `skip`), with the field's help and default.

    `deferred` maps fields whose default is decided later (e.g. by a preset) to the words that say so;
    their flag defaults to None.
    """
    deferred = deferred or {}
    for f in dataclasses.fields(config_cls):
        if f.name in skip or not f.init:
            continue
        meta = f.metadata
        default = _default(f)
        flag = "--" + meta.get("flag", f.name.replace("_", "-"))
        help_text = meta.get("help", "")
        if f.name in deferred:
            help_text += f" (default: {deferred[f.name]})"
        elif default is not None and default != [] and not meta.get("required"):
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"help": help_text, "dest": f.name, "default": default}
        if (isinstance(default, bool) and "type" not in meta) or meta.get("type") is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = meta.get("type", type(default) if default is not None else str)
            for key in ("choices", "nargs", "required", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
        if f.name in deferred:
            kwargs["default"] = None
        parser.add_argument(flag, **kwargs)


def config_from_args(config_cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build the config from parsed flags; `overrides` set fields that have no flag."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(config_cls)  # type: ignore[arg-type]
        if f.init and hasattr(args, f.name)
    }
    values.update(overrides)
    return config_cls(**values)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, paths and containers as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
