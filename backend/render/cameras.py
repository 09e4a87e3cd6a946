"""Cameras and their sampling, as in threestudio's random-camera data.

World frame: right-handed, Z up. A camera at elevation e, azimuth a and distance d sits at
    position = d * (cos e cos a, cos e sin a, sin e)
and looks at the origin, with Z as the up hint. Azimuth 0 looks from +X ("front view"). Camera frame is OpenGL's:
x right, y up, looking along -z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Cameras:
    """A batch of B pinhole cameras. Angles in degrees."""

    elevation: torch.Tensor  # (B,)
    azimuth: torch.Tensor  # (B,) in [-180, 180)
    distance: torch.Tensor  # (B,)
    fov: torch.Tensor  # (B,) vertical field of view

    def __len__(self) -> int:
        return self.elevation.shape[0]

    @property
    def position(self) -> torch.Tensor:
        e, a = torch.deg2rad(self.elevation), torch.deg2rad(self.azimuth)
        return self.distance[:, None] * torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], -1)

    @property
    def c2w(self) -> torch.Tensor:
        """(B, 4, 4) camera-to-world matrices (columns: right, up, back, position)."""
        eye = self.position
        forward = torch.nn.functional.normalize(-eye, dim=-1)
        # right = normalize(forward x Z) = (-sin a, cos a, 0) in closed form: the same for |elevation| < 90 and still
        # defined straight above or below the object (elevation +-90), where the cross product vanishes
        a = torch.deg2rad(self.azimuth).to(eye.dtype)
        right = torch.stack([-a.sin(), a.cos(), torch.zeros_like(a)], -1)
        up = torch.cross(right, forward, dim=-1)
        m = torch.eye(4, device=eye.device, dtype=eye.dtype).repeat(len(self), 1, 1)
        m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3] = right, up, -forward, eye
        return m

    def as_condition(self) -> torch.Tensor:
        """(B, 4) rows (elevation_deg, azimuth_deg, distance, fov_deg): the Prior interface's camera input."""
        return torch.stack([self.elevation, self.azimuth, self.distance, self.fov], -1)

    def rays(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions, each (B, H, W, 3); pixel centres, row 0 at the top."""
        focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(self.fov))  # (B,)
        dev, dt = self.elevation.device, self.elevation.dtype
        j, i = torch.meshgrid(
            torch.arange(height, device=dev, dtype=dt) + 0.5,
            torch.arange(width, device=dev, dtype=dt) + 0.5,
            indexing="ij",
        )
        f = focal.view(-1, 1, 1)
        x = (i - 0.5 * width) / f  # (B, H, W)
        y = -(j - 0.5 * height) / f
        dirs_cam = torch.stack([x, y, -torch.ones_like(x)], -1)  # (B, H, W, 3)
        c2w = self.c2w
        dirs = torch.einsum("bhwc,brc->bhwr", dirs_cam, c2w[:, :3, :3])
        dirs = torch.nn.functional.normalize(dirs, dim=-1)
        origins = c2w[:, None, None, :3, 3].expand_as(dirs)
        return origins, dirs

    def to(self, device) -> Cameras:
        return Cameras(*(x.to(device) for x in (self.elevation, self.azimuth, self.distance, self.fov)))


def sample_cameras(
    n: int,
    rng: torch.Generator,
    elevation_range=(-10.0, 45.0),
    azimuth_range=(-180.0, 180.0),
    distance_range=(2.5, 3.0),
    fov_range=(40.0, 50.0),
    device="cpu",
) -> Cameras:
    """Random cameras as in threestudio's RandomCameraDataset.

    Azimuth is stratified over the n views (one uniform draw per equal slice, as threestudio's batch_uniform_azimuth),
    so every step sees the object from all around. Elevation, distance and fov are uniform in their ranges.
    """

    def uniform(lo, hi, size):
        return lo + (hi - lo) * torch.rand(size, generator=rng)

    lo, hi = azimuth_range
    slice_width = (hi - lo) / n
    azimuth = lo + (torch.arange(n) + torch.rand(n, generator=rng)) * slice_width
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    cams = Cameras(
        elevation=uniform(*elevation_range, n),
        azimuth=azimuth,
        distance=uniform(*distance_range, n),
        fov=uniform(*fov_range, n),
    )
    return cams.to(device)


def orbit_cameras(n: int, elevation: float = 20.0, distance: float = 2.75, fov: float = 45.0, device="cpu") -> Cameras:
    """n cameras evenly spaced in azimuth, starting at the front (azimuth 0), for previews and contact sheets."""
    azimuth = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    return Cameras(full(elevation), azimuth, full(distance), full(fov)).to(device)


def view_suffix(azimuth_deg: float, elevation_deg: float, front_span: float = 90.0, overhead: float = 60.0) -> str:
    """DreamFusion's view-dependent prompt suffix: 'overhead view', 'front view', 'back view' or 'side view'.

    Front when |azimuth| < front_span / 2, back when |azimuth| > 180 - front_span / 2, side otherwise; overhead when
    the elevation exceeds ``overhead`` degrees (threestudio's defaults: 45 deg half-span, 60 deg overhead).
    """
    if elevation_deg > overhead:
        return "overhead view"
    a = abs((azimuth_deg + 180.0) % 360.0 - 180.0)
    if a < front_span / 2:
        return "front view"
    if a > 180.0 - front_span / 2:
        return "back view"
    return "side view"


def with_view_suffix(prompt: str, cams: Cameras) -> list[str]:
    """The prompt with each camera's view suffix appended: 'a red cube, front view'."""
    return [
        f"{prompt}, {view_suffix(float(a), float(e))}" for a, e in zip(cams.azimuth.tolist(), cams.elevation.tolist())
    ]


def fov_to_focal(fov_deg: float, size: int) -> float:
    return 0.5 * size / math.tan(0.5 * math.radians(fov_deg))
