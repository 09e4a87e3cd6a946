"""Export: formats, frames (Z up -> Y up for glb/obj), round trips, atomic writes, file modes, errors."""

import importlib.util
import os
import stat

import numpy as np
import pytest
import trimesh

from dreamstill.backend.mesh import Mesh
from dreamstill.backend.mesh import export as ex
from dreamstill.backend.mesh.export import export_mesh, load_mesh, resolve_format


def tetra(colors=True, textured=False, offset=0.0):
    """A closed, outward-oriented tetrahedron with one vertex straight up (+Z)."""
    v = np.array([[0, 0, 1], [0.9, 0, -0.3], [-0.45, 0.8, -0.3], [-0.45, -0.8, -0.3]], np.float32) + offset
    f = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]], np.int32)
    assert trimesh.Trimesh(v, f, process=False).volume > 0
    vc = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8) if colors else None
    uvs = tex = None
    if textured:
        uvs = np.array([[0.5, 0.9], [0.1, 0.1], [0.9, 0.1], [0.5, 0.5]], np.float32)
        tex = np.zeros((8, 8, 3), np.uint8)
        tex[:4] = [200, 10, 10]  # top half of the image = v > 0.5
        tex[4:] = [10, 10, 200]
    return Mesh(v, f, vertex_colors=vc, uvs=uvs, texture=tex)


@pytest.mark.parametrize("suffix", ["glb", "obj", "ply"])
def test_round_trip_keeps_counts_positions_and_colours(tmp_path, suffix):
    m = tetra()
    files = export_mesh(m, tmp_path / f"asset.{suffix}")
    assert files[0] == str(tmp_path / f"asset.{suffix}")
    back = load_mesh(files[0])
    assert back.num_vertices == m.num_vertices and back.num_faces == m.num_faces
    np.testing.assert_allclose(back.vertices, m.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, m.faces)
    np.testing.assert_array_equal(back.vertex_colors, m.vertex_colors)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_glb_and_obj_are_y_up_with_outward_winding_ply_is_z_up(tmp_path):
    m = tetra()
    for suffix, up in [("glb", 1), ("obj", 1), ("ply", 2)]:
        path = export_mesh(m, tmp_path / f"a.{suffix}")[0]
        raw = trimesh.load(path, process=False)
        raw = raw.to_geometry() if isinstance(raw, trimesh.Scene) else raw
        top = np.asarray(raw.vertices)[0]
        expected = np.zeros(3)
        expected[up] = 1.0
        np.testing.assert_allclose(top, expected, atol=1e-6)  # the world +Z apex is the file's up axis
        assert trimesh.Trimesh(raw.vertices, raw.faces, process=False).volume > 0  # rotation kept the winding
    # glb/obj: (x, y, z) -> (x, z, -y), so world +Y (depth in Blender) is glTF -Z
    np.testing.assert_allclose(np.array([0.0, 1.0, 0.0]) @ ex.Z_UP_TO_Y_UP.T, [0.0, 0.0, -1.0])
    assert np.linalg.det(ex.Z_UP_TO_Y_UP) == pytest.approx(1.0)


def test_textured_obj_writes_mtl_and_png_named_after_the_file(tmp_path):
    m = tetra(colors=False, textured=True)
    files = export_mesh(m, tmp_path / "my asset.obj")
    names = sorted(p.rsplit("/", 1)[-1] for p in files)
    assert names == ["my asset.mtl", "my asset.obj", "my_asset.png"]
    assert "map_Kd my_asset.png" in (tmp_path / "my asset.mtl").read_text()
    back = load_mesh(files[0])
    assert back.num_faces == 4
    np.testing.assert_array_equal(back.texture, m.texture)
    # the apex has v = 0.9 (upper half of the image, row 0 at the top) -> red
    apex = int(np.argmin(np.linalg.norm(back.vertices - [0, 0, 1], axis=1)))
    np.testing.assert_allclose(back.uvs[apex], [0.5, 0.9], atol=1e-6)


def test_textured_ply_samples_the_texture_at_vertices(tmp_path):
    m = tetra(colors=False, textured=True)
    back = load_mesh(export_mesh(m, tmp_path / "t.ply")[0])
    np.testing.assert_array_equal(back.vertex_colors[0], [200, 10, 10])  # v = 0.9
    np.testing.assert_array_equal(back.vertex_colors[1], [10, 10, 200])  # v = 0.1


def test_parts_become_nodes_in_glb_and_objects_in_obj(tmp_path):
    parts = [tetra(colors=False, textured=True), tetra(colors=False, textured=True, offset=3.0)]
    parts[1].texture = 255 - parts[1].texture  # different materials (identical ones are shared by trimesh)
    glb = export_mesh(parts, tmp_path / "two.glb")[0]
    assert len(trimesh.load(glb).geometry) == 2
    files = export_mesh(parts, tmp_path / "two.obj")
    assert sorted(p.rsplit("/", 1)[-1] for p in files) == ["two.mtl", "two.obj", "two_0.png", "two_1.png"]
    ply = load_mesh(export_mesh(parts, tmp_path / "two.ply")[0])
    assert ply.num_faces == 8 and ply.num_vertices == 8


def test_format_resolution_and_errors(tmp_path):
    assert resolve_format("a.GLB") == "glb" and resolve_format("a") == "glb"
    assert resolve_format("a.bin", format="ply") == "ply"
    with pytest.raises(ValueError, match=r"\.glb.*\.obj.*\.ply"):
        export_mesh(tetra(), tmp_path / "a.fbx")
    with pytest.raises(ValueError, match=r"\.glb"):
        export_mesh(tetra(), tmp_path / "a.gltf")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_mesh(tetra(), tmp_path / "missing" / "a.glb")
    with pytest.raises(ValueError, match="no faces"):
        export_mesh(Mesh(np.zeros((3, 3)), np.zeros((0, 3))), tmp_path / "a.glb")
    with pytest.raises(ValueError, match="no meshes"):
        export_mesh([], tmp_path / "a.glb")
    with pytest.raises(ValueError, match="uvs and Mesh.texture"):
        Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), uvs=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="index vertices"):
        Mesh(np.zeros((3, 3)), np.array([[0, 1, 3]]))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "a.glb"
    export_mesh(tetra(), target)
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ex, "encode_glb", broken)
    with pytest.raises(RuntimeError):
        export_mesh(tetra(offset=1.0), target)
    assert target.read_bytes() == before

    monkeypatch.setattr(ex.os, "replace", broken)  # crash between writing the temp file and renaming it
    with pytest.raises(RuntimeError):
        export_mesh(tetra(), tmp_path / "b.ply")
    with pytest.raises(RuntimeError):
        export_mesh(tetra(colors=False, textured=True), tmp_path / "c.obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.glb"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_respect_the_umask_not_mkstemps_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        files = export_mesh(tetra(), tmp_path / "a.glb") + export_mesh(tetra(), tmp_path / "a.ply")
        files += export_mesh(tetra(colors=False, textured=True), tmp_path / "t.obj")
        if importlib.util.find_spec("pxr") is not None:
            files += export_mesh(tetra(colors=False, textured=True), tmp_path / "t.usdc")
    finally:
        os.umask(old)
    assert len(files) >= 6
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, path


def test_vertex_normals_are_written_to_glb_in_its_frame_and_to_obj(tmp_path, glb_attributes):
    from dreamstill.backend.mesh.cleanup import smooth_vertex_normals

    m = tetra(colors=False)
    m = m.copy(normals=smooth_vertex_normals(m))
    export_mesh(m, tmp_path / "n.glb")
    attrs, arrays = glb_attributes(tmp_path / "n.glb")
    assert "NORMAL" in attrs
    np.testing.assert_allclose(arrays["NORMAL"], m.normals @ ex.Z_UP_TO_Y_UP.T, atol=1e-6)
    assert "NORMAL" not in glb_attributes(export_mesh(tetra(), tmp_path / "plain.glb")[0])[0]
    export_mesh(m, tmp_path / "n.obj")
    assert (tmp_path / "n.obj").read_text().count("\nvn ") == m.num_vertices


def test_normals_must_match_the_vertices():
    m = tetra()
    with pytest.raises(ValueError, match=r"Mesh.normals must be \(4, 3\)"):
        m.copy(normals=np.zeros((3, 3)))
