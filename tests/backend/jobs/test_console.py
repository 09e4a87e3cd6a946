"""The terminal progress of a job: steps on one bar, then the finishing phases by name, never a stale step bar."""

from __future__ import annotations

import io

from dreamstill.backend.jobs.console import ConsoleProgress
from dreamstill.protocol import Progress

NAN = float("nan")


def test_steps_then_named_phases_each_on_their_own_bar():
    out = io.StringIO()
    bar = ConsoleProgress("a red cube", file=out)
    for step in (1, 2, 3):
        bar.update(Progress(step, 3, 0.5 / step, 1.0))
    bar.update(Progress(0, 3, NAN, NAN, phase="mesh"))
    bar.update(Progress(1, 3, NAN, NAN, phase="export"))
    bar.update(Progress(2, 3, NAN, NAN, phase="views"))
    bar.close(done=True)
    text = out.getvalue()
    assert "3/3" in text and "loss=0.1667" in text  # the step bar ran to the end
    assert "a red cube: meshing" in text and "a red cube: writing files" in text
    assert "a red cube: rendering the contact sheet" in text
    assert "a red cube: done" in text.split("\r")[-1]  # the last line drawn says the job is done
    phases = text[text.index("meshing") :]
    assert "nan" not in text and "?" not in phases and "phase/s" not in phases  # no loss, rate or guessed time left


def test_instant_job_shows_no_step_bar():
    out = io.StringIO()
    bar = ConsoleProgress("a blue sphere", file=out)
    for i, phase in enumerate(("generate", "mesh", "decimate", "export", "views")):
        bar.update(Progress(i, 5, NAN, NAN, phase=phase))
    bar.close(done=True)
    text = out.getvalue()
    assert "step" not in text and "/400" not in text
    assert "4/5" in text and "5/5" in text and "a blue sphere: generating" in text


def test_the_stages_share_one_step_bar_that_names_the_stage():
    out = io.StringIO()
    bar = ConsoleProgress("a red cube", file=out)
    for step, phase in ((1, "density"), (2, "density"), (3, "geometry"), (4, "texture")):
        bar.update(Progress(step, 4, 1.0, 1.0, phase=phase))
    bar.update(Progress(0, 2, NAN, NAN, phase="mesh"))
    bar.close(done=True)
    text = out.getvalue()
    assert "a red cube (optimizing the density field)" in text and "a red cube (refining the surface)" in text
    assert "a red cube (painting the texture)" in text and "4/4" in text
    assert text.count("0/4") == 1  # one bar for the steps: it never restarts at a stage
