"""Shared by the benchmark scripts: the header line that records the machine, and a median."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(title: str) -> None:
    import jax

    d = jax.devices()[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {title}")
    print(f"# backend {jax.default_backend()} ({getattr(d, 'device_kind', d.platform)} x{len(jax.devices())}) | "
          f"jax {jax.__version__} | flax {_version('flax')} | torch {_version('torch')} | "
          f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')} | os.cpu_count()={os.cpu_count()} | "
          f"cpu {_cpu_model()} | load avg (1 min) {load:.1f}", flush=True)
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"# WARNING: load average {load:.1f} on {os.cpu_count()} cores: other work is running; "
              f"these figures are not representative", flush=True)


def med(xs):
    return statistics.median(xs) if xs else float("nan")
