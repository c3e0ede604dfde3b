"""The one way a config dataclass becomes command-line flags, and flags become a config.

    add_config_flags(parser, WorldModelConfig, prefix="wm-")     # --wm-n-layer, --wm-d-model, ...
    cfg = build_config(WorldModelConfig, args, prefix="wm-")     # only the flags given override defaults

One flag per field (`--prefix-field-name`), typed from the field's default (bool flags take
true/false, tuples take several values), its help text taken from the comment written beside
the field in the dataclass's source, and its default shown. A value the config rejects is
reported with the flag the user typed, never the internal field name.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import typing


def parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


@functools.lru_cache(maxsize=None)
def field_help(cls) -> dict[str, str]:
    """{field: the comment beside it in the class source} (empty where there is none)."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for m in re.finditer(r"^\s+(\w+):[^=\n]*=[^#\n]*#\s*(.+)$", src, re.M):
        out.setdefault(m.group(1), m.group(2).strip())
    return out


def flag_name(field: str, prefix: str = "") -> str:
    return f"--{prefix}{field.replace('_', '-')}"


def _dest(field: str, prefix: str) -> str:
    return f"cfg_{prefix.replace('-', '_')}{field}"


def add_config_flags(p, cls, prefix: str = "", skip: tuple[str, ...] = (), aliases: dict | None = None,
                     default_note: str | None = None) -> None:
    """One flag per field of dataclass `cls` on parser or group `p`. `default_note` replaces the
    shown default (e.g. "the scale's value" where a preset supplies it)."""
    helps, hints = field_help(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kw: dict = {"dest": _dest(f.name, prefix), "default": None}
        if isinstance(default, bool):
            kw.update(type=parse_bool, metavar="{true,false}")
        elif isinstance(default, (tuple, list)):  # an empty default: the element type annotated (tuple[float, ...])
            kw.update(nargs="+", type=type(default[0]) if default else (typing.get_args(hints[f.name]) or (str,))[0])
        elif default is None:
            kw.update(type=str)
        else:
            kw.update(type=type(default))
        kw.setdefault("metavar", f.name.upper())
        shown = default_note or (", ".join(map(str, default)) if isinstance(default, (tuple, list)) else default)
        kw["help"] = f"{helps.get(f.name, f.name.replace('_', ' '))} (default: {shown})".replace("%", "%%")
        names = [flag_name(f.name, prefix)] + list((aliases or {}).get(f.name, ()))
        p.add_argument(*names, **kw)


def given(cls, args, prefix: str = "") -> dict:
    """The fields of `cls` whose flags were given on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, _dest(f.name, prefix), None)
        if v is not None:
            out[f.name] = tuple(v) if isinstance(v, list) else v
    return out


def flagify(message: str, cls, prefix: str = "") -> str:
    """Rewrites `Cls.field` and `field=` in a config's error into the flag the user typed."""
    for f in dataclasses.fields(cls):
        message = re.sub(rf"\b{cls.__name__}\.{f.name}\b", flag_name(f.name, prefix), message)
    return message


def build_config(cls, args, prefix: str = "", **fixed):
    """`cls(**fixed, **given flags)`; its validation errors name the flags."""
    try:
        return cls(**{**fixed, **given(cls, args, prefix)})
    except ValueError as e:
        raise ValueError(flagify(str(e), cls, prefix)) from None
