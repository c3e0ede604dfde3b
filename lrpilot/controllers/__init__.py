"""LR controllers: one JAX-free interface for schedules, reactive rules and learned policies.

`make("cosine:lr_mult=3")` builds a controller from a command-line spec
`NAME[:key=value,...]`; a list value continues over commas (`milestones=0.5,0.75`).
`policy:PATH` and `policy:pretrained` load a learned controller (see `policy.load`).
"""

from __future__ import annotations

from lrpilot.controllers.base import Controller, Observation, RunInfo, finite
from lrpilot.controllers.reactive import REACTIVE
from lrpilot.controllers.schedules import SCHEDULES

REGISTRY: dict[str, type[Controller]] = {**SCHEDULES, **REACTIVE}
NAMES = tuple(REGISTRY) + ("policy",)


def parse_spec(spec: str) -> tuple[str, dict]:
    """'name:k=v,k2=v2,v3' -> ('name', {'k': 'v', 'k2': ['v2', 'v3']})."""
    name, _, rest = spec.strip().partition(":")
    opts: dict = {}
    last = None
    if name == "policy":
        return name, {"path": rest}
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
    if name == "policy":
        from policy.deploy import load_controller  # lazy: pulls in JAX

        return load_controller(opts["path"] or "pretrained")
    if name not in REGISTRY:
        raise ValueError(f"unknown controller '{name}' in '{spec}'; known: {', '.join(NAMES)}")
    return REGISTRY[name](**opts)


__all__ = ["Controller", "Observation", "RunInfo", "REGISTRY", "NAMES", "make", "parse_spec", "finite"]
