"""Run a batch on a Ray cluster: one Ray task per prompt, each calling the engine's ``run_job`` on its worker.

    dreamstill batch prompts.txt -o out/ --ray local      # a Ray instance on this machine, for this batch only
    dreamstill batch prompts.txt -o out/ --ray auto       # the cluster `ray start --head` made on this machine
    dreamstill batch prompts.txt -o out/ --ray HOST:6379  # (or ray://HOST:10001) a remote cluster

Each task holds one GPU (``num_gpus=1``) when the cluster has GPUs, else ``cpus`` CPUs (torch runs that many
threads). A task whose worker process is lost (killed, out of memory, node gone) is run again by Ray up to
``max_retries`` times; a job that fails on its own (bad prompt, empty field) is reported and not retried. The task
returns its files' bytes and the driver writes them under the batch's output folder, so workers need no shared
file system; every node needs dreamstill installed (``pip install "dreamstill[ray]"``). A bar counts finished
prompts. Ray's worker logs stay in Ray's session folder (/tmp/ray/session_latest/logs) rather than on the console.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

from .items import BatchItem
from .results import Manifest, write_result

DEFAULT_RUNNER = "dreamstill.backend.batch.ray_runner:engine_runner"
INSTALL_HINT = 'the --ray option needs Ray: pip install "dreamstill[ray]" (or pip install ray)'


class RayUnavailable(RuntimeError):
    """Ray is not installed, or no cluster answers at the address given; the message says what to do."""


def ray_available() -> bool:
    """True when Ray imports."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def connect(address: str) -> bool:
    """Join (or, for ``local``, start) a Ray cluster unless this process already has one; True if it joined here."""
    try:
        import ray
    except ImportError as err:
        raise RayUnavailable(INSTALL_HINT) from err
    if ray.is_initialized():
        return False
    options = {"log_to_driver": False, "configure_logging": False}
    if address == "local":
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except ConnectionError as err:
        raise RayUnavailable(
            f"no Ray cluster at {address!r} ({err}); start one with `ray start --head`, or use --ray local"
        ) from err
    return True


def task_options(cpus: int, max_retries: int) -> dict:
    """One GPU per task when the cluster has any, else ``cpus`` CPUs; retries of lost workers only."""
    import ray

    resources = {"num_gpus": 1, "num_cpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": cpus}
    return {**resources, "max_retries": max_retries, "retry_exceptions": False}


def engine_runner(spec, work_dir: Path, output_path: Path):
    """The engine's ``run_job`` with torch limited to the CPUs Ray gave this task."""
    import ray
    import torch

    from ..jobs import run_job

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return run_job(spec, work_dir, output_path=output_path)


def _resolve(runner: str):
    module, _, name = runner.partition(":")
    return getattr(importlib.import_module(module), name)


def run_prompt(spec, file_name: str, runner: str = DEFAULT_RUNNER) -> dict:
    """The body of one Ray task: run the job in a scratch folder and return {ok, files: {name: bytes}} or {ok, why}."""
    from dreamstill.protocol import Cancelled, Done, Failed

    with tempfile.TemporaryDirectory(prefix="dreamstill_ray_") as tmp:
        end = None
        for event in _resolve(runner)(spec, Path(tmp) / "work", Path(tmp) / file_name):
            if isinstance(event, (Done, Failed, Cancelled)):
                end = event
        if isinstance(end, Done):
            files = {Path(f).name: Path(f).read_bytes() for f in end.files}
            if file_name not in files:
                return {"ok": False, "why": f"the job wrote no {file_name} (got {sorted(files)})"}
            return {"ok": True, "files": files, "seconds": end.seconds}
        if isinstance(end, Failed):
            return {"ok": False, "why": f"{end.message} [{end.code}]"}
        return {"ok": False, "why": "the job ended without a result" if end is None else f"cancelled at {end.step}"}


def _collect(ref, item: BatchItem, out_dir: Path, manifest: Manifest) -> str | None:
    """Write a finished task's files; None when done, else why it failed."""
    import ray

    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as err:  # the worker was lost more than max_retries times, or the task raised
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    if not result["ok"]:
        return result["why"]
    manifest.record(item.path, write_result(out_dir, result["files"], item.path.name))
    return None


def run_on_ray(
    todo: list[BatchItem],
    out_dir: Path,
    manifest: Manifest,
    address: str = "local",
    cpus: int = 1,
    max_retries: int = 3,
    quiet: bool = False,
    runner: str = DEFAULT_RUNNER,
) -> int:
    """Run ``todo`` as Ray tasks and write their results into ``out_dir``; returns the number that failed.

    Raises RayUnavailable when Ray is missing or no cluster answers, KeyboardInterrupt when interrupted (the tasks
    still running are cancelled; finished results are on disk).
    """
    from tqdm import tqdm

    started_here = connect(address)
    import ray

    pending, failures = {}, 0
    bar = tqdm(total=len(todo), unit="prompt", desc="batch on Ray", disable=quiet)
    try:
        remote = ray.remote(run_prompt).options(**task_options(cpus, max_retries))
        pending = {remote.remote(item.spec, item.path.name, runner): item for item in todo}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(ref)
            why = _collect(ref, item, out_dir, manifest)
            if why is not None:
                failures += 1
                tqdm.write(f"dreamstill batch: {item.prompt!r}: {why}", file=sys.stderr)
            bar.update(1)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    return failures
