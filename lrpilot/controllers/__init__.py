"""LR controllers: one JAX-free interface for schedules, reactive rules and learned policies.

`make("cosine:lr_mult=3")` builds a controller from a command-line spec
`NAME[:key=value,...]`; a list value continues over commas (`milestones=0.5,0.75`).

The registry holds the schedules and reactive rules of this package. Controllers defined
above the kernel register themselves (`register`): the learned policy does so when
`lrpilot.policy` is imported, and is found without an import through the
`lrpilot.controllers` entry-point group of the installed package (`policy:PATH`,
`policy:pretrained`), so the kernel never imports a stage.
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
from typing import Callable

from lrpilot.controllers.base import Controller, Observation, RunInfo, finite
from lrpilot.controllers.reactive import REACTIVE
from lrpilot.controllers.schedules import SCHEDULES

ENTRY_POINT_GROUP = "lrpilot.controllers"


@dataclasses.dataclass(frozen=True)
class Entry:
    """factory(**options) -> Controller. With `path_arg`, everything after 'name:' is one string
    handed over as `path` (a file path may hold commas and '=')."""

    factory: Callable[..., Controller]
    path_arg: bool = False


BUILTIN: dict[str, type[Controller]] = {**SCHEDULES, **REACTIVE}  # the kernel's own controllers
REGISTRY: dict[str, Entry] = {name: Entry(cls) for name, cls in BUILTIN.items()}


def register(name: str, factory: Callable[..., Controller], path_arg: bool = False) -> None:
    """Makes `make("name:...")` build controllers with `factory` (a later registration replaces it)."""
    if not name or ":" in name or "," in name:
        raise ValueError(f"controller name {name!r} must be non-empty without ':' or ','")
    REGISTRY[name] = Entry(factory, path_arg)


def _plugin_names() -> tuple[str, ...]:
    try:
        return tuple(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception:  # broken metadata of another distribution must not break the registry
        return ()


def _lookup(name: str) -> Entry | None:
    if name not in REGISTRY:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                ep.load()  # importing the module registers its controllers
                break
    return REGISTRY.get(name)


def names() -> tuple[str, ...]:
    """Every controller name `make` knows: registered ones and installed plugins."""
    return tuple(dict.fromkeys((*REGISTRY, *_plugin_names())))


def parse_spec(spec: str) -> tuple[str, dict]:
    """'name:k=v,k2=v2,v3' -> ('name', {'k': 'v', 'k2': ['v2', 'v3']}); for a controller that
    takes a path ('policy:PATH'): ('policy', {'path': 'PATH'})."""
    name, _, rest = spec.strip().partition(":")
    entry = _lookup(name)
    if entry is not None and entry.path_arg:
        return name, {"path": rest}
    opts: dict = {}
    last = None
    for tok in filter(None, (t.strip() for t in rest.split(","))):
        if "=" in tok:
            last, _, v = tok.partition("=")
            last = last.strip()
            if last in opts:
                raise ValueError(f"controller spec '{spec}': option '{last}' given twice")
            opts[last] = v.strip()
        elif last is None:
            raise ValueError(f"controller spec '{spec}': expected key=value after ':', got '{tok}'")
        else:
            prev = opts[last]
            opts[last] = (prev if isinstance(prev, list) else [prev]) + [tok]
    return name, opts


def make(spec: str) -> Controller:
    """Builds a fresh controller from a spec string such as 'wsd:decay_frac=0.1'."""
    name, opts = parse_spec(spec)
    entry = _lookup(name)
    if entry is None:
        raise ValueError(f"unknown controller '{name}' in '{spec}'; known: {', '.join(names())}")
    return entry.factory(**opts)


__all__ = ["Controller", "Observation", "RunInfo", "BUILTIN", "REGISTRY", "register", "names", "make", "parse_spec", "finite"]
