"""A job's progress on a terminal (`dreamstill generate`, scripts): one tqdm bar for the optimization steps, then
one for the finishing phases whose description names the phase running now ("a red cube: baking the texture").
The phase bar shows the time spent, not a guess of the time left (phases differ too much in length for one)."""

from __future__ import annotations

import math

from dreamstill.protocol import Progress
from dreamstill.protocol.events import OPTIMIZE

PHASE_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"


class ConsoleProgress:
    """Feed it the job's Progress events; ``close`` when the job ends (``done=True`` fills the last bar)."""

    def __init__(self, label: str, disable: bool = False, file=None):
        self.label, self.disable, self.file = label, disable, file
        self._bar, self._optimizing = None, None

    def update(self, event: Progress) -> None:
        optimizing = event.optimizing
        if self._bar is None or optimizing != self._optimizing or event.total != self._bar.total:
            self._new_bar(event, optimizing)
        if not optimizing:
            self._bar.set_description_str(f"{self.label}: {event.label}", refresh=False)
        elif event.phase != OPTIMIZE:  # a stage of the one step bar: "a red cube (refining the surface)"
            self._bar.set_description_str(f"{self.label} ({event.label})", refresh=False)
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
            self._bar.close()  # draws the final state
            self._bar = None

    def _new_bar(self, event: Progress, optimizing: bool) -> None:
        from tqdm import tqdm

        self.close(done=self._bar is not None)  # the phase before this one has finished
        if optimizing:
            options = dict(desc=self.label, unit="step")
        else:
            options = dict(desc=f"{self.label}: {event.label}", unit="phase", bar_format=PHASE_BAR)
        self._bar = tqdm(total=event.total, disable=self.disable, file=self.file, **options)
        self._optimizing = optimizing
