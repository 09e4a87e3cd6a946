"""The triangle mesh that extraction, texture baking and export hand to each other.

World frame: right-handed, Z up (Blender's and threestudio's), the same frame as ``render.cameras``. Only the writers
in ``export.py`` change frame (glTF and OBJ are Y up).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


class EmptyFieldError(ValueError):
    """The field has no surface to extract (nothing above the threshold, or only a degenerate sliver).

    The message says what was found (largest density, threshold used) and what to try (more optimisation steps, a
    lower ``threshold``). Nothing is written when this is raised.
    """


@dataclass
class Mesh:
    """A triangle mesh with optional appearance.

    Attributes:
        vertices: (N, 3) float32 positions, world frame, Z up.
        faces: (M, 3) int32 vertex indices, counter-clockwise seen from outside (normals point outward).
        vertex_colors: (N, 3) uint8 sRGB albedo per vertex, or None.
        uvs: (N, 2) float32 texture coordinates per vertex, origin at the bottom-left of the texture
            (OBJ / Blender convention; the .glb writer flips v for glTF), or None.
        texture: (K, K, 3) uint8 albedo image, row 0 at the top, or None. Present together with ``uvs``.
        normals: (N, 3) float32 unit vertex normals (outward; smooth shading in the exported file), or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    normals: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32)
        n = len(self.vertices)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"Mesh.vertices must be (N, 3), got shape {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"Mesh.faces must be (M, 3) triangles, got shape {self.faces.shape}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= n):
            raise ValueError(f"Mesh.faces index vertices 0..{n - 1}, got range {self.faces.min()}..{self.faces.max()}")
        if self.vertex_colors is not None:
            self.vertex_colors = np.ascontiguousarray(self.vertex_colors, dtype=np.uint8)
            if self.vertex_colors.shape != (n, 3):
                raise ValueError(f"Mesh.vertex_colors must be ({n}, 3) uint8, got {self.vertex_colors.shape}")
        if (self.uvs is None) != (self.texture is None):
            raise ValueError("Mesh.uvs and Mesh.texture go together: give both or neither")
        if self.uvs is not None:
            self.uvs = np.ascontiguousarray(self.uvs, dtype=np.float32)
            if self.uvs.shape != (n, 2):
                raise ValueError(f"Mesh.uvs must be ({n}, 2) per vertex, got {self.uvs.shape}")
            self.texture = np.ascontiguousarray(self.texture, dtype=np.uint8)
            if self.texture.ndim != 3 or self.texture.shape[2] != 3:
                raise ValueError(f"Mesh.texture must be (H, W, 3) uint8, got {self.texture.shape}")
        if self.normals is not None:
            self.normals = np.ascontiguousarray(self.normals, dtype=np.float32)
            if self.normals.shape != (n, 3):
                raise ValueError(f"Mesh.normals must be ({n}, 3) per vertex, got {self.normals.shape}")

    @property
    def num_vertices(self) -> int:
        return int(len(self.vertices))

    @property
    def num_faces(self) -> int:
        return int(len(self.faces))

    def face_areas(self) -> np.ndarray:
        """(M,) triangle areas 0.5 * |(b - a) x (c - a)|."""
        return self.face_normals_and_areas()[1]

    def face_normals_and_areas(self) -> tuple[np.ndarray, np.ndarray]:
        """((M, 3) unit face normals (b - a) x (c - a) / |...|, (M,) areas), float64; a degenerate face's normal is 0."""
        a, b, c = (self.vertices[self.faces[:, k]].astype(np.float64) for k in range(3))
        cross = np.cross(b - a, c - a)
        area = 0.5 * np.linalg.norm(cross, axis=1)
        return cross / np.maximum(2.0 * area, 1e-30)[:, None], area

    def copy(self, **changes) -> Mesh:
        """A copy with some fields replaced (arrays not named are shared, not copied). New vertices drop the
        per-vertex normals unless new ones are given (they belonged to the old vertices)."""
        if "vertices" in changes and "normals" not in changes:
            changes["normals"] = None
        return replace(self, **changes)


@dataclass
class ExtractedMesh(Mesh):
    """What ``extract_mesh`` returns: a Mesh plus how it was found.

    Attributes:
        threshold: the iso level (``level`` in docs/notation.md) of the surface {x : density(x) = level}.
        box_min, box_max: (3,) corners of the box the fine grid covered (world frame).
        removed_components: how many small floating parts were dropped.
    """

    threshold: float = 0.0
    box_min: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    box_max: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    removed_components: int = 0
