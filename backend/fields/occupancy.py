"""Coarse occupancy grid for empty-space skipping (Instant-NGP Sec. 5.2 / nerfacc's OccGridEstimator, in plain torch).

An R^3 grid over the box [-bound, bound]^3 keeps, per cell, a running maximum of the density seen there,
    D_cell <- max(decay * D_cell, density(x_cell)),   x_cell = cell centre + U(-1/2, 1/2) cell jitter,
and a cell is occupied when D_cell > threshold, dilated by one cell so a surface between two cell centres is never
cut. The renderer evaluates the field only at samples in occupied cells; skipped samples get density 0. Before the
first update every cell is occupied, so an untouched grid changes nothing; an update that finds no dense cell at
all also marks every cell occupied (an empty field must still get gradients).

With threshold 0.1 and the default sampling (48 samples over a chord of at most 2 units, delta ~ 0.04) a skipped
sample has opacity 1 - exp(-density delta) < 0.4%.

``maybe_update`` refreshes every ``update_every`` calls; the renderer calls it on training renders (grad enabled), so
the default render path skips empty space without the caller managing the grid. The jitter of refresh k is drawn
from a torch.Generator seeded with k, so a run and its resume (the counters are buffers, saved with the field) agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    def __init__(
        self,
        bound: float = 1.0,
        resolution: int = 32,
        threshold: float = 0.1,
        update_every: int = 16,
        decay: float = 0.95,
        chunk: int = 65536,
    ):
        super().__init__()
        if resolution < 2:
            raise ValueError(f"OccupancyGrid resolution is {resolution}; use 2 or more (32 is usual)")
        if not bound > 0:
            raise ValueError(f"OccupancyGrid bound is {bound}; use the field's positive scene radius")
        self.bound, self.resolution, self.threshold = float(bound), int(resolution), float(threshold)
        self.update_every, self.decay, self.chunk = int(update_every), float(decay), int(chunk)
        r = self.resolution
        self.register_buffer("density", torch.full((r, r, r), float("inf")))  # inf: never measured, occupied
        self.register_buffer("occupied", torch.ones(r, r, r, dtype=torch.bool))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def cell_size(self) -> float:
        return 2 * self.bound / self.resolution

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def cell_centres(self) -> torch.Tensor:
        """(R^3, 3) world centres, index (i, j, k) -> x, y, z (i slowest)."""
        r, dev = self.resolution, self.density.device
        c = (torch.arange(r, device=dev, dtype=torch.float32) + 0.5) * self.cell_size - self.bound
        return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], rng: torch.Generator | None = None):
        """One refresh: D <- max(decay D, density(jittered centres)); occupied = dilate(D > threshold)."""
        if rng is None:
            rng = torch.Generator().manual_seed(int(self.updates))
        pts = self.cell_centres()
        jitter = torch.rand(pts.shape, generator=rng, device=rng.device).to(pts.device) - 0.5
        pts = pts + jitter * self.cell_size
        measured = torch.cat([density_fn(c).float().reshape(-1) for c in pts.split(self.chunk)])
        measured = measured.reshape(self.density.shape)
        fresh = torch.isinf(self.density)
        self.density.copy_(torch.where(fresh, measured, torch.maximum(self.density * self.decay, measured)))
        dense = (self.density > self.threshold).float()[None, None]
        occupied = torch.nn.functional.max_pool3d(dense, 3, stride=1, padding=1)[0, 0] > 0
        if not occupied.any():
            # nothing above the threshold anywhere: skipping everything would leave no gradient to grow geometry
            # from, so render everything until something is dense again
            occupied.fill_(True)
        self.occupied.copy_(occupied)
        self.updates += 1

    @torch.no_grad()
    def maybe_update(self, density_fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Refresh on calls 0, k, 2k, ... (k = update_every; 0 never). Returns whether it refreshed."""
        due = self.update_every > 0 and int(self.calls) % self.update_every == 0
        self.calls += 1
        if due:
            self.update(density_fn)
        return due

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3) world points -> (...,) bool, True where the cell is occupied; False outside the box."""
        r = self.resolution
        i, j, k = torch.floor((x.detach() + self.bound) / self.cell_size).long().unbind(-1)
        # per-coordinate comparisons: a reduction over the size-3 axis (.all(-1)) is several times slower on CPU
        inside = (i >= 0) & (i < r) & (j >= 0) & (j < r) & (k >= 0) & (k < r)
        flat = (i.clamp(0, r - 1) * r + j.clamp(0, r - 1)) * r + k.clamp(0, r - 1)
        return self.occupied.reshape(-1)[flat] & inside
