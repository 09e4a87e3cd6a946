"""Camera conditioning features for view-conditioned priors (MVDream-style).

MVDream adds an embedding of the camera to the UNet's timestep embedding. A diffusers UNet2DConditionModel does the
same with ``class_embed_type="projection"``: ``class_labels`` (B, 8) pass through a linear-SiLU-linear embedding
that is added to the timestep embedding. These are the 8 fixed features fed as ``class_labels``.
"""

from __future__ import annotations

import torch

CAMERA_FEATURES = 8


def camera_features(camera: torch.Tensor) -> torch.Tensor:
    """(B, 4) rows (elevation_deg, azimuth_deg, distance, fov_deg) -> (B, 8) features.

    [sin e, cos e, sin a, cos a, sin 2a, cos 2a, distance / 3 - 1 (about 0 at d = 3), fov / 45 - 1].
    The 2a harmonics let the prior tell a cube seen face-on from one seen edge-on.
    """
    e = torch.deg2rad(camera[:, 0])
    a = torch.deg2rad(camera[:, 1])
    return torch.stack(
        [e.sin(), e.cos(), a.sin(), a.cos(), (2 * a).sin(), (2 * a).cos(), camera[:, 2] / 3 - 1, camera[:, 3] / 45 - 1],
        -1,
    )
