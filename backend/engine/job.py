"""Moved: ``run_job`` lives in ``dreamstill.backend.jobs`` (above the engine and the generators). This module keeps
``from dreamstill.backend.engine.job import run_job`` working for callers not yet updated."""

from __future__ import annotations


def run_job(*args, **kwargs):
    """``dreamstill.backend.jobs.run_job`` (see there)."""
    from ..jobs import run_job as run

    return run(*args, **kwargs)
