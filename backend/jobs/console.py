"""A job's progress on a terminal (`dreamstill generate`, scripts): one tqdm bar for the optimization steps, then
one for the finishing phases whose description names the phase running now ("a red cube: baking the texture")."""

from __future__ import annotations

import math

from dreamstill.protocol import Progress
from dreamstill.protocol.events import OPTIMIZE


class ConsoleProgress:
    """Feed it the job's Progress events; ``close`` when the job ends (``done=True`` fills the last bar)."""

    def __init__(self, label: str, disable: bool = False, file=None):
        self.label, self.disable, self.file = label, disable, file
        self._bar, self._optimizing = None, None

    def update(self, event: Progress) -> None:
        optimizing = event.phase == OPTIMIZE
        if self._bar is None or optimizing != self._optimizing or event.total != self._bar.total:
            self._new_bar(event.total, optimizing)
        if not optimizing:
            self._bar.set_description_str(f"{self.label}: {event.label}", refresh=False)
        elif math.isfinite(event.loss):
            self._bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
        self._bar.n = event.step
        self._bar.refresh()

    def close(self, done: bool = False) -> None:
        if self._bar is not None:
            if done:
                self._bar.n = self._bar.total
                if not self._optimizing:
                    self._bar.set_description_str(f"{self.label}: done", refresh=False)
                self._bar.refresh()
            self._bar.close()
            self._bar = None

    def _new_bar(self, total: int, optimizing: bool) -> None:
        from tqdm import tqdm

        self.close(done=self._bar is not None)  # the phase before this one has finished
        unit = "step" if optimizing else "phase"
        self._bar = tqdm(total=total, desc=self.label, unit=unit, disable=self.disable, file=self.file)
        self._optimizing = optimizing
