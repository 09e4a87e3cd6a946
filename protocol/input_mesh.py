"""The artist's mesh that travels with a ``submit`` (texture it, or start from it), and which modes take one.

A submit may carry three array frames next to its JobSpec (``protocol.messages``):

    vertices  (N, 3)    float32   positions in the object's own frame (Z up, as Blender and the backend)
    faces     (M, 3)    int32     triangles, corner indices into vertices
    uvs       (M, 3, 2) float32   optional: the UV of each triangle corner (Blender keeps UVs per face corner,
                                  "loop", so a vertex on a UV seam has several)

The JobSpec's ``mode`` says what the backend does with it: ``texture`` keeps the geometry exactly and distils only
its appearance, ``refine`` starts the shape from it and refines shape and appearance. A job in these modes without a
mesh is refused, and so is a mesh sent with any other mode (:func:`check_mesh_for_mode`), on both sides of the wire.

Pure Python + numpy (Blender imports it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schema import JobSpecError

MESH_MODES = ("texture", "refine")  # the modes that take an input mesh (and need one)


@dataclass
class InputMesh:
    """vertices (N, 3) float32, faces (M, 3) int32 into them, uvs (M, 3, 2) float32 per corner or None.

    Made as it is checked: ValueError says what is wrong (shapes, an index out of range, a number that is not
    finite, no faces)."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"mesh vertices must be (N, 3), got shape {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"mesh faces must be (M, 3) triangles, got shape {self.faces.shape}")
        n, m = len(self.vertices), len(self.faces)
        if m == 0:
            raise ValueError("the mesh has no faces; send a mesh with at least one triangle")
        if int(self.faces.view(np.uint32).max()) >= n:  # negatives wrap to >= 2**31
            raise ValueError(f"mesh faces must index vertices 0..{n - 1}; one refers to another vertex")
        if not np.isfinite(self.vertices).all():
            raise ValueError("mesh vertices must be finite numbers (no NaN or infinity)")
        if self.uvs is not None:
            self.uvs = np.ascontiguousarray(self.uvs, dtype=np.float32)
            if self.uvs.shape != (m, 3, 2):
                raise ValueError(f"mesh uvs must be ({m}, 3, 2), one (u, v) per triangle corner; got {self.uvs.shape}")
            if not np.isfinite(self.uvs).all():
                raise ValueError("mesh uvs must be finite numbers (no NaN or infinity)")

    @property
    def vertex_count(self) -> int:
        return len(self.vertices)

    @property
    def face_count(self) -> int:
        return len(self.faces)

    def arrays(self) -> dict[str, np.ndarray]:
        """The named arrays as a submit carries them."""
        out = {"vertices": self.vertices, "faces": self.faces}
        if self.uvs is not None:
            out["uvs"] = self.uvs
        return out

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    @classmethod
    def from_arrays(cls, arrays: dict) -> InputMesh | None:
        """The mesh of a submit's arrays (None when it carries none); ValueError for an incomplete set."""
        if not arrays:
            return None
        if "vertices" not in arrays or "faces" not in arrays:
            raise ValueError("a mesh needs both 'vertices' and 'faces' arrays (and optionally 'uvs')")
        return cls(arrays["vertices"], arrays["faces"], arrays.get("uvs"))

    def summary(self) -> dict:
        """Counts for a job's status and logs."""
        return {"vertices": self.vertex_count, "faces": self.face_count, "uvs": self.uvs is not None}


def check_mesh_for_mode(mode: str, has_mesh: bool) -> None:
    """JobSpecError when the mode and the presence of a mesh do not go together (texture/refine need one, the other
    modes take none)."""
    if mode in MESH_MODES and not has_mesh:
        raise JobSpecError(
            f"JobSpec.mode: {mode!r} works on a mesh, and none was sent; pass one (Client.submit(spec, mesh=...), "
            "`dreamstill generate --input-mesh FILE`, or select a mesh object in Blender)"
        )
    if mode not in MESH_MODES and has_mesh:
        raise JobSpecError(
            f"JobSpec.mode: {mode!r} makes an asset from the prompt alone, and a mesh was sent; use mode 'texture' "
            "(keep its geometry, paint it) or 'refine' (start from its shape), or send no mesh"
        )


__all__ = ["MESH_MODES", "InputMesh", "check_mesh_for_mode"]
