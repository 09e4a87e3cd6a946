"""Mesh files as the input of texture and refine jobs: frames, per-corner UVs, and errors that say what to do."""

from __future__ import annotations

import numpy as np
import pytest

from dreamstill.backend.mesh import Mesh, export_mesh
from dreamstill.backend.mesh.input import load_input_mesh

TETRA = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
TETRA_UVS = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]], np.float32)


def textured() -> Mesh:
    texture = np.zeros((8, 8, 3), np.uint8)
    return Mesh(TETRA, TETRA_FACES, uvs=TETRA_UVS, texture=texture)


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_y_up_files_come_back_in_the_world_frame_with_corner_uvs(tmp_path, suffix):
    """export_mesh turns Z up into Y up for .glb and .obj; the loader turns it back, and each triangle corner gets
    its vertex's UV (the layout Blender sends)."""
    path = tmp_path / f"tetra{suffix}"
    export_mesh(textured(), path)
    mesh = load_input_mesh(path)
    np.testing.assert_allclose(mesh.vertices[mesh.faces], TETRA[TETRA_FACES], atol=1e-6)
    np.testing.assert_allclose(mesh.uvs, TETRA_UVS[TETRA_FACES], atol=1e-6)


def test_a_ply_is_read_as_it_is_without_uvs(tmp_path):
    path = tmp_path / "tetra.ply"
    export_mesh(Mesh(TETRA, TETRA_FACES, vertex_colors=np.full((4, 3), 200, np.uint8)), path)
    mesh = load_input_mesh(path)
    np.testing.assert_allclose(mesh.vertices[mesh.faces], TETRA[TETRA_FACES], atol=1e-6)
    assert mesh.uvs is None


def test_bad_files_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read \.fbx; use one of \.glb"):
        load_input_mesh(tmp_path / "model.fbx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_input_mesh(tmp_path / "missing.glb")
    (tmp_path / "broken.glb").write_bytes(b"not a glTF file")
    with pytest.raises(ValueError, match="could not be read"):
        load_input_mesh(tmp_path / "broken.glb")
    (tmp_path / "points.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                                         "property float y\nproperty float z\nend_header\n0 0 0\n")  # fmt: skip
    with pytest.raises(ValueError, match="holds no triangles"):
        load_input_mesh(tmp_path / "points.ply")
