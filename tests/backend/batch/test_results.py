"""Results written whole with the umask's mode, recorded, and verified on a rerun."""

import os
import stat

from dreamstill.backend.batch.results import MANIFEST_NAME, Manifest, write_result


def test_write_result_puts_every_file_in_place_main_last(tmp_path, monkeypatch):
    import dreamstill.backend.mesh.export as ex

    order = []
    real_replace = os.replace
    monkeypatch.setattr(ex.os, "replace", lambda a, b: (order.append(os.path.basename(b)), real_replace(a, b)))
    old = os.umask(0o022)
    try:
        paths = write_result(tmp_path, {"a.usda": b"#usda", "a_texture.png": b"png", "a_views.png": b"v"}, "a.usda")
    finally:
        os.umask(old)
    assert [p.name for p in paths] == ["a.usda", "a_texture.png", "a_views.png"]
    assert order[-1] == "a.usda"  # the asset appears last: once it exists, its texture does too
    assert (tmp_path / "a_texture.png").read_bytes() == b"png"
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.usda", "a_texture.png", "a_views.png"]


def test_manifest_verifies_what_it_recorded(tmp_path):
    asset, views = tmp_path / "001_a.glb", tmp_path / "001_a_views.png"
    asset.write_bytes(b"glTF" + bytes(100))
    views.write_bytes(b"png")
    manifest = Manifest(tmp_path)
    assert manifest.verify(tmp_path / "002_b.glb") == "missing"
    manifest.record(asset, [asset, views])
    assert manifest.verify(asset) is None
    assert Manifest(tmp_path).verify(asset) is None  # saved at once, read back by a rerun
    views.write_bytes(b"PNG")  # same size, other bytes
    assert "001_a_views.png changed" in Manifest(tmp_path).verify(asset)
    views.unlink()
    assert Manifest(tmp_path).verify(asset) == "001_a_views.png is missing"
    views.write_bytes(b"png")
    asset.write_bytes(b"glTF")  # truncated
    assert "001_a.glb changed" in Manifest(tmp_path).verify(asset)


def test_unrecorded_assets_count_when_not_empty_and_a_broken_record_is_ignored(tmp_path):
    old = tmp_path / "001_old.glb"
    old.write_bytes(b"x")
    empty = tmp_path / "002_empty.glb"
    empty.write_bytes(b"")
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    manifest = Manifest(tmp_path)
    assert manifest.entries == {}
    assert manifest.verify(old) is None
    assert manifest.verify(empty) == "002_empty.glb is empty"
