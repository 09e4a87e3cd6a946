"""How many CPU threads torch should use for one job.

torch's default (one thread per physical core) is right on an idle machine and ruinous on a busy one: OpenMP threads
spin against each other and against the other work. The same `dreamstill generate "a red cube"` took 2 min 32 s on
an idle 2-core machine and 37 min 43 s while other work ran; one thread was 2.5x faster under load. So: an explicit
choice wins (``--threads N``, then ``DREAMSTILL_THREADS``); otherwise one thread per core that the 1-minute load
average leaves free, at least 1 and at most the physical cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV_VAR = "DREAMSTILL_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # why, in words, for the line printed at the start of a job

    def __str__(self) -> str:
        return f"{self.threads} torch thread{'s' if self.threads != 1 else ''} ({self.reason})"


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores (hyper-threads do not help torch's dense kernels), capped by :func:`usable_cpus`."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    return max(1, min(cores or usable_cpus(), usable_cpus()))


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return None


def choose_threads(
    requested: int | None = None,
    env: dict | None = None,
    load: float | None = None,
    cpus: int | None = None,
    cores: int | None = None,
) -> ThreadChoice:
    """The thread count and why. ``requested`` (--threads) wins, then ``env[DREAMSTILL_THREADS]``; otherwise
    ``clamp(round(cpus - load), 1, cores)``. ValueError when a requested count is not a whole number >= 1."""
    env = os.environ if env is None else env
    if requested is not None:
        return ThreadChoice(_positive(requested, "--threads"), "--threads")
    if env.get(ENV_VAR, "").strip():
        return ThreadChoice(_positive(env[ENV_VAR].strip(), ENV_VAR), ENV_VAR)
    cpus = usable_cpus() if cpus is None else cpus
    cores = physical_cores() if cores is None else cores
    load = load_average() if load is None else load
    if load is None:
        return ThreadChoice(cores, f"{cores} physical cores; no load average here")
    free = round(cpus - load)
    threads = max(1, min(cores, free))
    return ThreadChoice(threads, f"load {load:.1f} on {cpus} CPUs; set --threads or {ENV_VAR} to choose")


def _positive(value, source: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or str(n) != str(value).strip():
        raise ValueError(f"{source} is {value!r}; use a whole number of threads >= 1")
    return n


def apply_threads(choice: ThreadChoice) -> None:
    """Set torch's intra-op thread count."""
    import torch

    torch.set_num_threads(choice.threads)
