"""What the add-on says about a job: progress lines for scripts, the panel's bar text, the job's warnings.
Without bpy (tests import it on its own).

A job reports ``Progress(step, total, loss, eta_s, elapsed_s, phase)``: ``phase`` names the stage ("optimize",
then "mesh", "bake", "export" after the optimization bar reached 100%). The finished job's warnings arrive in
``Done.metrics["warnings"]`` (a list of strings), e.g. a prompt outside the built-in prior's world.
"""

from __future__ import annotations

PHASE_LABELS = {
    "fit": "Fitting the field to the mesh",
    "optimize": "Optimizing",
    "mesh": "Extracting the mesh",
    "unwrap": "Unwrapping UVs",
    "bake": "Baking the texture",
    "export": "Writing files",
}
FINISHING = "Finishing: mesh, texture, files"
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 500


def phase_of(event) -> str:
    """The phase a Progress event reports ("" when it names none)."""
    # MERGE: the pipeline helper adds Progress.phase to the protocol; until then older Progress objects lack it.
    return str(getattr(event, "phase", "") or "")


def phase_label(phase: str) -> str:
    return PHASE_LABELS.get(phase, phase.replace("_", " ").capitalize())


def duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 1 h 02 min."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _optimizing(phase: str) -> bool:
    return phase in ("", "optimize")


def progress_line(prompt: str, step: int, total: int, loss: float, eta_s: float, phase: str = "") -> str:
    """One line for the console in blocking mode, e.g.
    ``Dreamstill [a red cube] optimize 120/400 (30%)  loss 0.123  ETA 42 s``."""
    head = f"Dreamstill [{prompt}] {phase or 'optimize'}"
    if total:
        head += f" {step}/{total} ({100 * step // total}%)"
    if _optimizing(phase):
        head += f"  loss {loss:.3g}"
    return head + (f"  ETA {duration(eta_s)}" if eta_s > 0 else "")


def bar_text(step: int, total: int, loss: float, eta_s: float, phase: str = "") -> str:
    """The text on the panel's progress bar. While optimizing: steps, loss and time left; once the optimization
    bar is full, the phase the backend is in (meshing, baking ...) instead of a silent 100%."""
    left = f"  {duration(eta_s)} left" if eta_s > 0 else ""
    if not _optimizing(phase):
        return phase_label(phase) + (f" {step}/{total}" if total else "") + left
    if not total:
        return "Queued"
    if step >= total:
        return FINISHING
    return f"{step}/{total}  loss {loss:.3g}  {duration(eta_s)} left"


def warnings_of(metrics) -> list[str]:
    """The job's warnings from ``Done.metrics``: a list of short strings (a lone string counts as one; anything
    else that is not a list is ignored, so a backend bug cannot break the add-on)."""
    found = metrics.get("warnings") if isinstance(metrics, dict) else None
    if isinstance(found, str):
        found = [found]
    if not isinstance(found, list):
        return []
    out = []
    for text in found[:MAX_WARNINGS]:
        text = " ".join(str(text).split())
        if text:
            out.append(text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 3] + "...")
    return out


def done_line(prompt: str, seconds: float, warnings: list[str]) -> str:
    """The status text of a finished job."""
    text = f"Done: {prompt} ({seconds:.1f} s)"
    if warnings:
        text += f"; {len(warnings)} warning{'s' if len(warnings) > 1 else ''}: {warnings[0]}"
    return text
