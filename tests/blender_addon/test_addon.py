"""The Blender add-on end to end, in bpy 5.0.1: the zip made by `dreamstill build-addon` is installed and enabled
in bpy, a real `dreamstill serve` runs in a subprocess (with the fake job runner of backend/server/testing.py, so a
job costs milliseconds per step instead of a prior), and the operators are driven as a script would drive them.

Blender runs without a window here, so ``bpy.app.timers`` never fire: tests use the operators' blocking mode
(the default in background) or call the timer function ``follow.timer_tick`` themselves, as Blender would.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

_USER = tempfile.mkdtemp(prefix="dreamstill-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER  # keep the installed extension out of ~/.config/blender

bpy = pytest.importorskip("bpy")

from dreamstill.backend.addon_build import WheelName, build_addon, narrow_manifest  # noqa: E402

FAKE_RUNNER = "dreamstill.backend.server.testing:fake_runner"
ADDON_MODULE = "bl_ext.user_default.dreamstill"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, port: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "dreamstill.backend.cli",
        "serve",
        "--bind",
        f"tcp://127.0.0.1:{port}",
        "--store",
        str(store),
        "--runner",
        FAKE_RUNNER,
    ]
    log = open(store.parent / f"serve-{port}.log", "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(address: str, proc: subprocess.Popen, seconds: float = 90.0) -> None:
    from dreamstill.protocol import Client, ServerUnavailable

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "dreamstill serve exited early"
        with Client(address, timeout_s=2.0) as client:
            try:
                client.ping()
                return
            except ServerUnavailable:
                continue
    raise AssertionError(f"dreamstill serve did not answer at {address}")


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("addon")
    cmd = [
        sys.executable,
        "-m",
        "dreamstill.backend.cli",
        "build-addon",
        "-o",
        str(out),
        "--platform",
        "local",
        "--offline",
        "--wheels-dir",
        str(out / "wheels"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    zips = sorted(out.glob("dreamstill-*.zip"))
    assert len(zips) == 1
    return zips[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    port = free_port()
    proc = start_server(root / "store", port)
    address = f"tcp://127.0.0.1:{port}"
    try:
        wait_ready(address, proc)
        yield address
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def addon(addon_zip):
    """The extension installed from the zip and enabled; disabled at the end (which must close everything)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    result = bpy.ops.extensions.package_install_files(
        filepath=str(addon_zip), repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}
    module = sys.modules[ADDON_MODULE]
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.timeout_s = 3.0
    prefs.output_dir = str(Path(_USER) / "results")
    yield module
    import addon_utils

    follow, pool = module_of("follow"), module_of("clients").POOL
    clients = list(pool.values())
    addon_utils.disable(ADDON_MODULE, default_set=True)
    assert not hasattr(bpy.types.Scene, "dreamstill")
    assert not bpy.app.timers.is_registered(follow.timer_tick)
    assert not pool and all(c.closed for c in clients) and not follow.JOBS
    assert not any(getattr(h, "__module__", "").startswith(ADDON_MODULE) for h in bpy.app.handlers.load_post)
    shutil.rmtree(_USER, ignore_errors=True)


@pytest.fixture
def scene(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.cursor.location = (1.0, 2.0, 0.5)
    return scene


def fast(**extra) -> dict:
    """Operator settings for a quick fake job."""
    opts = {"fake_step_s": 0.01, "fake_vertices": 40}
    opts.update(extra.pop("options", {}))
    import json

    return dict(steps=extra.pop("steps", 6), preview_every=2, mesh_every=2, options_json=json.dumps(opts), **extra)


def module_of(name: str):
    """A module of the installed add-on, e.g. module_of("follow")."""
    import importlib

    return importlib.import_module(f"{ADDON_MODULE}.{name}")


@pytest.fixture
def short_timeout(addon):
    """Fault tests: the backend counts as down after 1.5 s of silence (the other tests allow 3 s)."""
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.timeout_s = 1.5
    yield
    prefs.timeout_s = 3.0


# ------------------------------------------------------------------------------------------------ the zip
def test_zip_holds_manifest_protocol_and_local_wheel(addon_zip):
    import tomllib

    with zipfile.ZipFile(addon_zip) as zf:
        names = set(zf.namelist())
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    assert {"__init__.py", "operators.py", "live.py", "_vendor/dreamstill_protocol/client.py"} <= names
    assert manifest["id"] == "dreamstill" and manifest["platforms"] == ["linux-x64"]
    assert "network" in manifest["permissions"]
    wheel = manifest["wheels"][0]
    assert wheel[len("./") :] in names and "cp311" in wheel
    assert not any("__pycache__" in n for n in names)


def test_build_picks_the_right_wheels_per_platform(tmp_path):
    """With every wheel of the manifest at hand (empty stand-ins), each platform's zip gets exactly its own two."""
    from dreamstill.backend.addon_build import read_manifest, source_dirs

    _, manifest = read_manifest(source_dirs()[0])
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in manifest["wheels"]:
        (wheels / Path(name).name).write_bytes(b"stand-in")
    built = build_addon(tmp_path / "out", wheels_dir=wheels, offline=True, log=lambda *_: None)
    assert [p.name for p in built] == [f"dreamstill-0.1.0-{p.replace('-', '_')}.zip" for p in manifest["platforms"]]
    import tomllib

    for path, plat in zip(built, manifest["platforms"]):
        with zipfile.ZipFile(path) as zf:
            listed = tomllib.loads(zf.read("blender_manifest.toml").decode())["wheels"]
            inside = sorted(n for n in zf.namelist() if n.startswith("wheels/"))
        assert sorted(w[2:] for w in listed) == inside and len(inside) == 2
        assert all(plat in WheelName.parse(w).blender_platforms for w in listed)
        assert {"cp311", "cp312"} == {WheelName.parse(w).python_tags[0] for w in listed}
    again = build_addon(tmp_path / "again", wheels_dir=wheels, offline=True, log=lambda *_: None)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in built]  # reproducible zips
    single = build_addon(tmp_path / "one", wheels_dir=wheels, offline=True, single_zip=True, log=lambda *_: None)
    assert len(single) == 1 and single[0].stat().st_size > max(p.stat().st_size for p in built)


def test_build_offline_for_a_foreign_platform_without_wheels_says_what_to_do(tmp_path):
    from dreamstill.backend.addon_build import BuildError

    with pytest.raises(BuildError, match="wheels"):
        build_addon(
            tmp_path, platforms=["windows-x64"], wheels_dir=tmp_path / "none", offline=True, log=lambda *_: None
        )


def test_wheel_names_map_to_blender_platforms():
    assert WheelName.parse("pyzmq-27.3.0-cp312-abi3-macosx_10_15_universal2.whl").blender_platforms == {
        "macos-arm64",
        "macos-x64",
    }
    assert WheelName.parse("pyzmq-27.3.0-cp311-cp311-win_amd64.whl").blender_platforms == {"windows-x64"}
    linux = WheelName.parse("pyzmq-27.3.0-cp311-cp311-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl")
    assert linux.blender_platforms == {"linux-x64"}
    assert linux.pip_download_args()[:1] == ["pyzmq==27.3.0"] and "3.11" in linux.pip_download_args()
    text = 'id = "x"\nplatforms = ["a", "b"]\nwheels = [\n  "./wheels/old.whl",\n]\n'
    out = narrow_manifest(text, ["linux-x64"], ["new.whl"])
    import tomllib

    assert tomllib.loads(out) == {"id": "x", "platforms": ["linux-x64"], "wheels": ["./wheels/new.whl"]}


# ------------------------------------------------------------------------------------------------ in-place updates
def test_mesh_and_texture_updates_reuse_the_same_datablocks(addon, scene):
    """Two textured updates of different sizes: one mesh, one image, one material; rows flipped, UVs per corner."""
    live = sys.modules[ADDON_MODULE + ".live"]
    events = sys.modules[ADDON_MODULE + "._vendor.dreamstill_protocol.events"]
    obj = live.new_asset_object("asset", (0, 0, 0), live.root_collection(scene))
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int32)
    uvs = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[0] = (255, 0, 0)  # the top row is red
    counts = None
    for scale, size in ((1.0, 8), (2.0, 16)):
        texture = np.kron(tex, np.ones((size // 8, size // 8, 1), np.uint8))
        live.apply_update(
            obj,
            events.MeshUpdate(
                step=1, vertices=verts * scale, faces=faces, uvs=uvs, texture=texture, final=scale == 2.0
            ),
        )
        now = (len(bpy.data.meshes), len(bpy.data.images), len(bpy.data.materials))
        assert counts is None or now == counts
        counts = now
    mesh = obj.data
    assert (len(mesh.vertices), len(mesh.polygons)) == (4, 4)
    co = np.empty(12, np.float32)
    mesh.vertices.foreach_get("co", co)
    np.testing.assert_allclose(co.reshape(4, 3), verts * 2 - (1, 1, 0))  # no size set: grounded, footprint centred
    corner_uv = np.empty(24, np.float32)
    mesh.uv_layers["UVMap"].data.foreach_get("uv", corner_uv)
    np.testing.assert_allclose(corner_uv.reshape(12, 2), uvs[faces.ravel()])
    image = bpy.data.images[obj["dreamstill_texture"]]
    assert tuple(image.size) == (16, 16) and image.packed_file is not None
    pixels = np.empty(16 * 16 * 4, np.float32)
    image.pixels.foreach_get(pixels)
    pixels = pixels.reshape(16, 16, 4)
    np.testing.assert_allclose(pixels[-1, 0], (1, 0, 0, 1))  # Blender's last row is the top row
    np.testing.assert_allclose(pixels[0, 0], (0, 0, 0, 1))
    links = obj.active_material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].links
    assert links[0].from_node.type == "TEX_IMAGE" and links[0].from_node.image == image


def test_bad_faces_are_refused_with_the_vertex_count(addon, scene):
    live = sys.modules[ADDON_MODULE + ".live"]
    obj = live.new_asset_object("bad", (0, 0, 0), live.root_collection(scene))
    with pytest.raises(ValueError, match="3 vertices"):
        live.apply_mesh(obj, np.zeros((3, 3), np.float32), np.array([[0, 1, 5]]))


# ------------------------------------------------------------------------------------------------ with a server
def test_generate_blocks_in_background_and_builds_the_asset(addon, scene, server, capsys):
    result = bpy.ops.dreamstill.generate(prompt="a red cube", server=server, seed=3, **fast())
    assert result == {"FINISHED"}
    settings = scene.dreamstill
    item = settings.queue[0]
    assert item.state == "DONE", item.message
    assert item.step == item.total == 6
    obj = bpy.data.objects[item.object_name]
    assert obj.name == obj.data.name == "red cube"  # named after the prompt
    assert tuple(obj.location) == pytest.approx((1.0, 2.0, 0.5))  # the 3D cursor when it started
    box = world_bbox(obj)  # stands on the ground at the cursor, 1 m (the panel's default size) across
    assert box[0, 2] == pytest.approx(0.5, abs=1e-5) and np.ptp(box, axis=0).max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(box[:, :2].mean(0), (1.0, 2.0), atol=1e-5)
    printed = capsys.readouterr().out.splitlines()  # blocking mode says what is happening
    assert "Dreamstill [a red cube] optimize 6/6 (100%)  loss 0.167" in printed
    assert any(line.startswith("Dreamstill [a red cube] optimize 1/6") for line in printed)
    assert any(line.startswith("Dreamstill [a red cube] Done: a red cube (") for line in printed)
    assert obj.users_collection[0].name == "Dreamstill"
    assert (len(obj.data.vertices), len(obj.data.polygons)) == (40, 38)  # fake_mesh: n vertices, n - 2 faces
    assert obj.data.color_attributes["Col"].domain == "POINT"
    links = obj.active_material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].links
    assert links[0].from_node.type == "ATTRIBUTE" and links[0].from_node.attribute_name == "Col"
    spec_module = sys.modules[ADDON_MODULE + "._vendor.dreamstill_protocol.jobspec"]
    spec = spec_module.JobSpec.from_json(obj["dreamstill_spec"])
    assert (spec.prompt, spec.seed, spec.steps) == ("a red cube", 3, 6)
    assert obj["dreamstill_job_id"] == item.job_id and obj["dreamstill_state"] == "done"
    assert settings.preview_image is not None and tuple(settings.preview_image.size) == (8, 8)
    assert not module_of("follow").JOBS
    # regenerate / vary: the stored spec goes back into the panel
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.dreamstill.use_spec(new_seed=True) == {"FINISHED"}
    assert (settings.prompt, settings.seed, settings.steps) == ("a red cube", 4, 6)


def test_timer_path_updates_in_place_and_keeps_the_newest(addon, scene, server):
    """What the GUI does: submit without waiting, then the timer callback pumps; one mesh datablock throughout."""
    follow = module_of("follow")
    assert bpy.ops.dreamstill.generate(
        prompt="a blue torus", server=server, wait=False, **fast(steps=30, options={"fake_step_s": 0.03})
    ) == {"FINISHED"}
    item = scene.dreamstill.queue[0]
    obj = bpy.data.objects[item.object_name]
    mesh_name, meshes = obj.data.name, len(bpy.data.meshes)
    steps_seen = []
    deadline = time.monotonic() + 60
    while item.state == "SUBMITTED" and time.monotonic() < deadline:
        interval = follow.timer_tick()
        steps_seen.append(item.step)
        time.sleep(0.05)
    assert item.state == "DONE" and interval is None  # the timer stops itself when nothing is followed
    assert obj.data.name == mesh_name and len(bpy.data.meshes) == meshes
    assert len(obj.data.vertices) == 40
    assert steps_seen == sorted(steps_seen) and len(set(steps_seen)) > 2  # progress arrived while it ran


def test_batch_of_three_in_a_grid(addon, scene, server):
    result = bpy.ops.dreamstill.batch(
        prompts="a red cube; a green cone\na blue sphere", server=server, spacing=3.0, **fast()
    )
    assert result == {"FINISHED"}
    queue = scene.dreamstill.queue
    assert [i.prompt for i in queue] == ["a red cube", "a green cone", "a blue sphere"]
    assert all(i.state == "DONE" for i in queue), [i.message for i in queue]
    objs = [bpy.data.objects[i.object_name] for i in queue]
    coll = objs[0].users_collection[0]
    assert coll.name == "Dreamstill Batch 1" and coll.name in bpy.data.collections["Dreamstill"].children
    assert all(o.users_collection[0] == coll and len(o.data.vertices) == 40 for o in objs)
    offsets = [tuple(np.round(np.array(o.location) - (1.0, 2.0, 0.5), 4)) for o in objs]
    assert offsets == [(0, 0, 0), (3, 0, 0), (0, -3, 0)]  # 2 columns for 3 items
    assert len({i.job_id for i in queue}) == 3


def test_size_and_a_batch_along_the_selected_curve(addon, scene, server):
    """A poly curve through x = 0, 1, 4 (uneven points), moved by its object to y = 5: three assets at x = 0, 2, 4 of
    it, each standing on the curve at the operator's size."""
    data = bpy.data.curves.new("path", "CURVE")
    spline = data.splines.new("POLY")
    spline.points.add(2)
    for point, x in zip(spline.points, (0.0, 1.0, 4.0)):
        point.co = (x, 0.0, 0.0, 1.0)
    curve = bpy.data.objects.new("Path", data)
    curve.location = (0.0, 5.0, 0.25)
    scene.collection.objects.link(curve)
    curve.select_set(True)
    bpy.context.view_layer.objects.active = curve
    result = bpy.ops.dreamstill.batch(
        prompts="a red cube; a green cone; a blue sphere", server=server, size=0.5, wait=False, **fast()
    )
    assert result == {"FINISHED"} and "along Path" in scene.dreamstill.status
    assert bpy.ops.dreamstill.wait(timeout=60) == {"FINISHED"}
    queue = scene.dreamstill.queue
    assert all(i.state == "DONE" for i in queue), [i.message for i in queue]
    objs = [bpy.data.objects[i.object_name] for i in queue]
    assert [o.name for o in objs] == ["red cube", "green cone", "blue sphere"]
    np.testing.assert_allclose([tuple(o.location) for o in objs], [(0, 5, 0.25), (2, 5, 0.25), (4, 5, 0.25)], atol=1e-6)
    for obj in objs:
        box = world_bbox(obj)
        assert box[0, 2] == pytest.approx(0.25, abs=1e-5) and np.ptp(box, axis=0).max() == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(RuntimeError, match="no curve object named 'Nope'"):
        bpy.ops.dreamstill.batch(prompts="a; b", server=server, curve="Nope", **fast())


def test_closed_bezier_curve_points_are_evenly_spaced(addon, scene):
    """A Bezier circle of radius 2 at (1, 1, 0): four assets on it, a quarter of the way round from each other."""
    batch = module_of("batch")
    bpy.ops.curve.primitive_bezier_circle_add(radius=2.0, location=(1.0, 1.0, 0.0))
    circle = bpy.context.active_object
    points = np.array(batch.batch_locations(bpy.context, 4, 1.0, batch.selected_curve(bpy.context)))
    np.testing.assert_allclose(np.linalg.norm(points[:, :2] - (1, 1), axis=1), 2.0, atol=2e-3)
    gaps = np.linalg.norm(points - np.roll(points, 1, axis=0), axis=1)
    np.testing.assert_allclose(gaps, 2 * np.sqrt(2), atol=1e-2)  # the chord of a quarter circle
    circle.select_set(False)
    grid = batch.batch_locations(bpy.context, 2, 3.0, batch.selected_curve(bpy.context))
    assert grid == [(1.0, 2.0, 0.5), (4.0, 2.0, 0.5)]  # nothing selected: a grid from the cursor


def test_batch_survives_save_and_reopen(addon, scene, server, tmp_path):
    """A batch saved while running resumes when the .blend is opened again (load_post handler)."""
    follow = module_of("follow")
    text = bpy.data.texts.new("prompts")
    text.write("# my prompts\na red cube\n\na green cone\n")
    assert bpy.ops.dreamstill.batch(
        text_name="prompts", server=server, wait=False, **fast(steps=40, options={"fake_step_s": 0.02})
    ) == {"FINISHED"}
    path = tmp_path / "batch.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    module_of("clients").close_all()  # as if Blender was closed: nothing followed, no sockets
    follow.forget_all()
    bpy.ops.wm.read_homefile(use_empty=True)
    assert not follow.JOBS
    bpy.ops.wm.open_mainfile(filepath=str(path))  # load_post resumes the queue
    queue = bpy.context.scene.dreamstill.queue
    assert len(queue) == 2 and len(follow.JOBS) == 2
    assert bpy.ops.dreamstill.wait(timeout=60) == {"FINISHED"}
    assert [i.state for i in queue] == ["DONE", "DONE"]
    assert all(len(bpy.data.objects[i.object_name].data.vertices) == 40 for i in queue)


def test_cancel(addon, scene, server):
    assert bpy.ops.dreamstill.generate(
        prompt="a slow cube", server=server, wait=False, **fast(steps=2000, options={"fake_step_s": 0.02})
    ) == {"FINISHED"}
    item = scene.dreamstill.queue[0]
    follow = module_of("follow")
    deadline = time.monotonic() + 30
    while item.step < 3 and time.monotonic() < deadline:
        follow.pump(0.1)
    assert bpy.ops.dreamstill.cancel() == {"FINISHED"}
    assert bpy.ops.dreamstill.wait(timeout=30) == {"FINISHED"}
    assert item.state == "CANCELLED" and item.step < 2000
    assert bpy.data.objects[item.object_name]["dreamstill_state"] == "cancelled"


def test_backend_down_gives_a_clear_message(addon, scene, short_timeout):
    """Operators called from a script raise RuntimeError with the message; the panel's status shows it too."""
    address = f"tcp://127.0.0.1:{free_port()}"
    settings = scene.dreamstill
    with pytest.raises(RuntimeError, match="Backend not running"):
        bpy.ops.dreamstill.connect(server=address)
    assert settings.status_error and address in settings.status and "dreamstill serve" in settings.status
    with pytest.raises(RuntimeError, match="Backend not running"):
        bpy.ops.dreamstill.generate(prompt="a cube", server=address, **fast())
    assert scene.dreamstill.queue[0].state == "PENDING"  # kept: Resume sends it once a backend runs
    with pytest.raises(RuntimeError, match="tcp://HOST:PORT"):
        bpy.ops.dreamstill.generate(prompt="a cube", server="localhost:5555")
    with pytest.raises(RuntimeError, match="Options: not valid JSON"):
        bpy.ops.dreamstill.generate(prompt="a cube", server=address, options_json="{bad")
    with pytest.raises(RuntimeError, match="Type a prompt"):
        bpy.ops.dreamstill.generate(prompt="  ", server=address)
    assert len(scene.dreamstill.queue) == 1  # bad input queued nothing


def test_backend_killed_mid_job_fails_the_job(addon, scene, tmp_path, short_timeout):
    port = free_port()
    proc = start_server(tmp_path / "store", port)
    address = f"tcp://127.0.0.1:{port}"
    try:
        wait_ready(address, proc)
        assert bpy.ops.dreamstill.generate(
            prompt="a doomed cube", server=address, wait=False, **fast(steps=5000, options={"fake_step_s": 0.02})
        ) == {"FINISHED"}
        item = scene.dreamstill.queue[0]
        follow = module_of("follow")
        deadline = time.monotonic() + 30
        while item.step < 2 and time.monotonic() < deadline:
            follow.pump(0.1)
        assert item.step >= 2
        proc.kill()
        proc.wait(10)
        started = time.monotonic()
        while item.state == "SUBMITTED" and time.monotonic() - started < 60:
            follow.timer_tick()  # stays responsive: each tick returns at once
            time.sleep(0.05)
        assert item.state == "FAILED" and "stopped answering" in item.message
        assert scene.dreamstill.status_error
        assert not follow.JOBS and address not in module_of("clients").POOL
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------------------------------------ panel, backend
class FakeLayout:
    """Stands in for UILayout (no window here): checks every property and operator the panel names exists."""

    def __init__(self, log):
        self.log = log

    def _child(self, *args, **kwargs):
        return FakeLayout(self.log)

    row = column = box = split = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"the panel draws a missing property {name!r}"
        self.log.append(("prop", name))

    def operator(self, idname, **kwargs):
        category, name = idname.split(".")
        op = getattr(getattr(bpy.ops, category), name)
        props = {p.identifier for p in op.get_rna_type().properties}
        self.log.append(("operator", idname))

        class Props:
            def __setattr__(self, key, value):
                assert key in props, f"{idname} has no property {key!r}"

        return Props()

    def label(self, **kwargs):
        self.log.append(("label", kwargs.get("text", "")))

    def progress(self, **kwargs):
        assert 0.0 <= kwargs["factor"] <= 1.0
        self.log.append(("progress", kwargs["text"]))

    def template_icon(self, **kwargs):
        self.log.append(("icon", kwargs["icon_value"]))

    def template_list(self, listtype, list_id, data, prop, active_data, active_prop, **kwargs):
        assert listtype in dir(bpy.types) and prop in data.bl_rna.properties
        assert active_prop in active_data.bl_rna.properties
        self.log.append(("list", prop))


def draw_all_panels(addon):
    from types import SimpleNamespace

    panel = sys.modules[ADDON_MODULE + ".panel"]
    log = []
    for cls in panel.classes:
        if hasattr(cls, "draw") and cls.__name__.startswith("VIEW3D_PT"):
            cls.draw(SimpleNamespace(layout=FakeLayout(log)), bpy.context)
    return log


def test_panels_draw_existing_properties_and_operators(addon, scene, server):
    settings = scene.dreamstill
    log = draw_all_panels(addon)
    assert ("operator", "dreamstill.generate") in log and ("prop", "prompt") in log
    assert ("operator", "dreamstill.texture") in log and ("operator", "dreamstill.refine") in log
    assert ("prop", "keep_shape") in log
    assert not any(kind == "progress" for kind, _ in log)
    bpy.ops.dreamstill.generate(prompt="a red cube", server=server, **fast())
    settings.queue[0].state, settings.queue[0].step = "SUBMITTED", 3  # draw as if it were running
    log = draw_all_panels(addon)
    assert ("progress", "3/6  loss 0.167  0 s left") in log and ("prop", "asset_size") in log
    assert ("list", "queue") in log and any(kind == "icon" for kind, _ in log)
    settings.preset = "DRAFT"
    assert (settings.steps, settings.mesh_resolution, settings.texture_size) == (150, 64, 256)


def test_start_and_stop_a_local_backend(addon, scene, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match="exited with code 3.*boom"):
        bpy.ops.dreamstill.start_backend(
            server=address, wait_s=30, command=f"{sys.executable} -c \"print('boom'); raise SystemExit(3)\""
        )
    command = (
        f"{sys.executable} -m dreamstill.backend.cli serve --bind {{address}} --store {tmp_path / 'store'} "
        f"--runner {FAKE_RUNNER}"
    )
    assert bpy.ops.dreamstill.start_backend(server=address, command=command, wait_s=90) == {"FINISHED"}
    process = module_of("backend_process").current().process
    try:
        assert "Backend running" in scene.dreamstill.status
        assert bpy.ops.dreamstill.generate(prompt="a red cube", server=address, **fast()) == {"FINISHED"}
        assert scene.dreamstill.queue[0].state == "DONE"
        # the worker process dies mid-job: the server reports it and the job fails with that reason
        with pytest.raises(RuntimeError, match="worker"):
            bpy.ops.dreamstill.generate(
                prompt="a crashing cube", server=address, **fast(steps=50, options={"fake_exit_at": 3})
            )
        assert scene.dreamstill.queue[1].state == "FAILED"
    finally:
        assert bpy.ops.dreamstill.stop_backend() == {"FINISHED"}
    assert process.poll() is not None and module_of("backend_process").current() is None


def test_only_loopback_without_online_access(addon, scene):
    is_loopback = module_of("proto").is_loopback
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://[::1]:5555") and is_loopback("tcp://127.3.2.1:1")
    assert is_loopback("ipc:///tmp/ds.sock") and not is_loopback("tcp://10.0.0.2:5555")
    assert not is_loopback("tcp://127.example.com:5555")  # a host name, not the loopback network
    if not bpy.app.online_access:
        with pytest.raises(RuntimeError, match="online access"):
            bpy.ops.dreamstill.connect(server="tcp://10.0.0.2:5555")


def test_import_result_downloads_and_reports_an_unreadable_file(addon, scene, server):
    """The fake runner's result is random bytes named asset.glb: it is fetched, and the import error is clear."""
    bpy.ops.dreamstill.generate(prompt="a red cube", server=server, **fast())
    item = scene.dreamstill.queue[0]
    with pytest.raises(RuntimeError, match="could not import"):
        bpy.ops.dreamstill.import_result(job_id=item.job_id)
    fetched = Path(_USER) / "results" / item.job_id / "asset.glb"
    assert fetched.stat().st_size == 1000
    with pytest.raises(RuntimeError, match="finished Dreamstill object"):
        bpy.ops.dreamstill.import_result(job_id="no-such-job")


def test_resume_with_the_backend_down_tries_each_address_once(addon, scene, server, short_timeout, monkeypatch):
    job_queue, clients = module_of("job_queue"), module_of("clients")
    address = f"tcp://127.0.0.1:{free_port()}"
    settings = scene.dreamstill
    for prompt in ("a", "b", "c"):
        item = settings.queue.add()
        item.prompt, item.address, item.state = prompt, address, "PENDING"
        item.spec_json = job_queue.spec_json(module_of("proto").JobSpec(prompt=prompt, steps=3))
    asked = []
    real_client_for = clients.client_for
    monkeypatch.setattr(clients, "client_for", lambda a: asked.append(a) or real_client_for(a))
    problems = job_queue.resume([scene])
    monkeypatch.undo()
    assert len(problems) == 1 and asked == [address]  # one timeout for the address, not one per item
    assert all("not resumed" in i.message and i.state == "PENDING" for i in settings.queue)
    for item in settings.queue:  # the backend is back (here: another address): Resume sends them
        item.address = server
    assert bpy.ops.dreamstill.resume() == {"FINISHED"}
    assert [i.state for i in settings.queue] == ["DONE"] * 3


# ------------------------------------------------------------------------------------------------ the real engine
def world_bbox(obj) -> np.ndarray:
    bpy.context.view_layer.update()  # matrix_world of objects made or moved since the last evaluation
    co = np.empty(3 * len(obj.data.vertices), np.float32)
    obj.data.vertices.foreach_get("co", co)
    m = np.array(obj.matrix_world)
    pts = co.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]
    return np.stack([pts.min(0), pts.max(0)])


def render_scene(objects, path: Path, size=(480, 270), samples=16) -> None:
    """Cycles on the CPU: the objects in a row, a sun, a grey floor, a camera framing them all."""
    from mathutils import Vector

    scene = bpy.context.scene
    boxes = np.stack([world_bbox(o) for o in objects])
    lo, hi = boxes[:, 0].min(0), boxes[:, 1].max(0)
    center, radius = Vector((lo + hi) / 2), float(np.linalg.norm(hi - lo)) / 2
    bpy.ops.mesh.primitive_plane_add(size=50 * radius, location=(center.x, center.y, float(lo[2])))
    floor = bpy.context.active_object
    floor.data.materials.append(bpy.data.materials.new("floor"))
    floor.active_material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (0.6, 0.6, 0.62, 1)
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (0.7, 0.2, 0.8)
    scene.collection.objects.link(sun)
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    direction = Vector((0.55, -1.0, 0.6)).normalized()
    cam.location = center + direction * radius * 2.8
    cam.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    if scene.world is None:
        scene.world = bpy.data.worlds.new("world")
    scene.world.color = (0.3, 0.32, 0.36)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(path)
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(write_still=True)


@pytest.mark.slow
def test_real_engine_job_textured_asset_import_and_render(addon, scene, tmp_path):
    """`dreamstill serve` with the real engine and the built-in prior: the streamed asset has the baked texture,
    the downloaded .glb imports to the same place (Z up survives the glTF round trip), and Cycles renders it.
    Set DREAMSTILL_ADDON_RENDER=docs/results/addon_render.png to keep the picture."""
    port = free_port()
    store = tmp_path / "store"
    cmd = [
        sys.executable,
        "-m",
        "dreamstill.backend.cli",
        "serve",
        "--bind",
        f"tcp://127.0.0.1:{port}",
        "--store",
        str(store),
    ]
    # one torch thread: the bpy test process shares the 2 cores, and 2 contended threads run 5-20x slower
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    address = f"tcp://127.0.0.1:{port}"
    try:
        wait_ready(address, proc)
        prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
        prefs.timeout_s = 30.0  # the worker imports torch before its first answer
        result = bpy.ops.dreamstill.generate(
            prompt="a red cube",
            server=address,
            prior="builtin",
            steps=40,
            resolution=32,
            mesh_resolution=48,
            texture_size=64,
            preview_every=20,
            mesh_every=0,
            timeout=900,
        )
        assert result == {"FINISHED"}
        item = scene.dreamstill.queue[0]
        assert item.state == "DONE", item.message
        obj = bpy.data.objects[item.object_name]
        assert len(obj.data.vertices) > 100 and len(obj.data.polygons) > 100
        image = bpy.data.images[obj["dreamstill_texture"]]
        assert tuple(image.size) == (64, 64) and image.packed_file is not None
        links = obj.active_material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].links
        assert links[0].from_node.image == image and "UVMap" in obj.data.uv_layers
        assert bpy.ops.dreamstill.import_result(job_id=item.job_id) == {"FINISHED"}
        imported = [
            o for o in bpy.data.objects if o.type == "MESH" and o.get("dreamstill_job_id") == item.job_id and o != obj
        ]
        assert len(imported) == 1
        live_box = world_bbox(obj)  # 1 m across, standing at the cursor; the import lands on it
        assert live_box[0, 2] == pytest.approx(0.5, abs=1e-5) and np.ptp(live_box, axis=0).max() == pytest.approx(1.0)
        np.testing.assert_allclose(world_bbox(imported[0]), live_box, atol=1e-3)
    finally:
        proc.terminate()
        proc.wait(30)
    imported[0].location.x += float(np.ptp(live_box[:, 0])) * 1.3
    out = Path(os.environ.get("DREAMSTILL_ADDON_RENDER", tmp_path / "render.png")).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    render_scene([obj, imported[0]], out)
    pixels = bpy.data.images.load(str(out)).pixels[:]
    assert len(pixels) == 480 * 270 * 4 and np.std(np.asarray(pixels).reshape(-1, 4)[:, :3]) > 0.02


def test_apply_events_uses_only_the_newest_update_of_each_kind(addon, scene, monkeypatch):
    """A tick that finds several meshes and progress events applies one mesh (the last) and the last progress."""
    follow, job_queue = module_of("follow"), module_of("job_queue")
    live = sys.modules[ADDON_MODULE + ".live"]
    ev = sys.modules[ADDON_MODULE + "._vendor.dreamstill_protocol.events"]
    settings = scene.dreamstill
    item = settings.queue.add()
    item.prompt, item.job_id, item.state, item.spec_json = "x", "job-1", "SUBMITTED", '{"prompt": "x"}'
    job_queue.ensure_object(scene, item)
    applied = []
    monkeypatch.setattr(live, "apply_update", lambda obj, update: applied.append(update.step))
    job = follow.LiveJob("job-1", "tcp://127.0.0.1:1", scene.name)
    follow.JOBS["job-1"] = job
    mesh = [
        ev.MeshUpdate(step=s, vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 2]], np.int32))
        for s in (10, 20, 30)
    ]
    follow.apply_events(
        job,
        [
            ev.Progress(10, 100, 0.5, 9.0),
            mesh[0],
            ev.Progress(20, 100, 0.4, 8.0),
            mesh[1],
            mesh[2],
            ev.Progress(30, 100, 0.3, 7.0),
        ],
    )
    assert applied == [30] and (item.step, item.total, item.loss) == (30, 100, pytest.approx(0.3))
    assert item.state == "SUBMITTED" and "job-1" in follow.JOBS
    bad = ev.MeshUpdate(step=40, vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 7]], np.int32))
    monkeypatch.undo()  # the real apply_update: a face that points past the vertices fails the job cleanly
    item2 = settings.queue.add()
    item2.prompt, item2.job_id, item2.state = "y", "job-2", "SUBMITTED"
    job_queue.ensure_object(scene, item2)
    job2 = follow.JOBS["job-2"] = follow.LiveJob("job-2", "tcp://127.0.0.1:1", scene.name)
    follow.apply_events(job2, [bad])
    assert item2.state == "FAILED" and "could not apply" in item2.message and "job-2" not in follow.JOBS
    follow.apply_events(job, [ev.Failed("out_of_memory", "lower the resolution")])
    assert item.state == "FAILED" and "lower the resolution" in item.message and "out_of_memory" in item.message
    assert settings.status_error and "job-1" not in follow.JOBS
    obj = bpy.data.objects[item.object_name]
    assert obj["dreamstill_state"] == "failed"


def test_warnings_and_phases_reach_the_panel_and_the_console(addon, scene, capsys):
    """A job past its optimization bar reports its phase; its Done carries warnings: the panel's bar names the phase,
    the finished job's warnings are on the item, the object and in the panel, and blocking mode prints them."""
    follow, job_queue = module_of("follow"), module_of("job_queue")
    ev = module_of("_vendor.dreamstill_protocol.events")
    settings = scene.dreamstill
    item = settings.queue.add()
    item.prompt, item.job_id, item.state, item.spec_json = "a hamburger", "job-w", "SUBMITTED", '{"prompt": "x"}'
    job_queue.ensure_object(scene, item)
    settings.active_job = "job-w"
    job = follow.JOBS["job-w"] = follow.LiveJob("job-w", "tcp://127.0.0.1:1", scene.name, echo=True)
    follow.apply_events(job, [ev.Progress(400, 400, 0.1, 0.0)])
    assert ("progress", module_of("reporting").FINISHING) in draw_all_panels(addon)
    baking = ev.Progress(1, 2, 0.0, 4.0)
    baking.phase = "bake"  # MERGE: Progress(..., phase="bake") once the pipeline helper's field is in
    follow.apply_events(job, [baking])
    assert item.phase == "bake" and ("progress", "Baking the texture 1/2  4 s left") in draw_all_panels(addon)
    warning = "'hamburger' is outside the built-in prior's world (cube, sphere, ...); use a real prior"
    follow.apply_events(job, [ev.Done(files=[], seconds=2.0, metrics={"warnings": [warning]})])
    assert item.state == "DONE" and item.warnings == warning and item.phase == ""
    assert list(bpy.data.objects[item.object_name]["dreamstill_warnings"]) == [warning]
    assert "1 warning" in settings.status and not settings.status_error
    labels = " ".join(text for kind, text in draw_all_panels(addon) if kind == "label")
    assert "'hamburger' is outside the built-in" in labels and "use a real prior" in labels
    printed = capsys.readouterr().out.splitlines()
    assert "Dreamstill [a hamburger] optimize 400/400 (100%)  loss 0.1" in printed
    assert "Dreamstill [a hamburger] bake 1/2 (50%)  ETA 4 s" in printed
    assert f"Dreamstill [a hamburger] warning: {warning}" in printed


def test_read_mesh_of_the_artists_object_and_one_too_large_to_send(addon, scene):
    """A cube: 8 vertices, 12 triangles, each corner's UV from its loop. A 400 x 400 grid with UVs is over the
    request limit: the error names it and a decimate ratio, and with a Decimate modifier at that ratio it is sent."""
    scene_mesh, mesh_data = module_of("scene_mesh"), module_of("mesh_data")
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    mesh = scene_mesh.read_mesh(cube)
    assert mesh.vertices.shape == (8, 3) and mesh.faces.shape == (12, 3) and mesh.uvs.shape == (12, 3, 2)
    np.testing.assert_allclose(np.abs(mesh.vertices), 1.0)
    cube.data.calc_loop_triangles()
    loops = np.empty(36, np.int32)
    cube.data.loop_triangles.foreach_get("loops", loops)
    uv = np.empty(2 * len(cube.data.loops), np.float32)
    cube.data.uv_layers.active.data.foreach_get("uv", uv)
    np.testing.assert_array_equal(mesh.uvs.reshape(-1, 2), uv.reshape(-1, 2)[loops])
    cube.data.uv_layers.remove(cube.data.uv_layers[0])
    cube.data.update()  # tag it, so the evaluated mesh is rebuilt
    assert scene_mesh.read_mesh(cube).uvs is None
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=400, y_subdivisions=400)
    grid = bpy.context.active_object
    with pytest.raises(mesh_data.MeshTooLarge, match=r"the mesh 'Grid' is too large to send: .* with its UVs") as err:
        scene_mesh.read_mesh(grid)
    ratio = float(re.search(r"ratio (\d\.\d\d)", str(err.value)).group(1))
    assert 0.3 < ratio < 1.0
    grid.modifiers.new("decimate", "DECIMATE").ratio = ratio
    sent = scene_mesh.read_mesh(grid)  # the evaluated mesh, modifiers applied
    assert sent.nbytes <= mesh_data.mesh_budget() and len(sent.faces) < len(grid.data.polygons) * 2
    with pytest.raises(ValueError, match="select a mesh object first"):
        scene_mesh.read_mesh(bpy.data.objects.new("empty", None))


# ------------------------------------------------------------------------------------------------ the artist's mesh
def mesh_state(obj) -> tuple:
    """(vertex positions, polygon vertex indices) of an object's own mesh, to check that nothing moved."""
    co = np.empty(3 * len(obj.data.vertices), np.float32)
    obj.data.vertices.foreach_get("co", co)
    loops = np.empty(len(obj.data.loops), np.int32)
    obj.data.loops.foreach_get("vertex_index", loops)
    return co, loops


def image_grey(image) -> float:
    pixels = np.empty(image.size[0] * image.size[1] * 4, np.float32)
    image.pixels.foreach_get(pixels)
    return float(pixels.reshape(-1, 4)[:, 0].mean())


def test_texture_keeps_the_objects_geometry_and_paints_a_new_material(addon, scene, server):
    """A cube with its own UV map: the fake runner echoes the triangles and their UVs with an 8 x 8 texture of grey
    level = step. The cube keeps every vertex and face; a new material holds the image through the cube's UV map;
    the artist's old material stays in its slot."""
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(3.0, 0.0, 1.0))
    cube = bpy.context.active_object
    old = bpy.data.materials.new("artist's")
    cube.data.materials.append(old)
    before = mesh_state(cube)
    result = bpy.ops.dreamstill.texture(prompt="a red cube", server=server, **fast())
    assert result == {"FINISHED"}, scene.dreamstill.status
    item = scene.dreamstill.queue[0]
    assert item.state == "DONE", item.message
    assert item.texture_only and item.source == item.object_name == cube.name
    after = mesh_state(cube)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert (len(cube.data.vertices), len(cube.data.polygons)) == (8, 6) and "Dreamstill" not in bpy.data.collections
    assert [m.name for m in cube.data.materials] == ["artist's", "Cube Dreamstill"]
    indices = np.empty(6, np.int32)
    cube.data.polygons.foreach_get("material_index", indices)
    assert (indices == 1).all()
    nodes = cube.data.materials[1].node_tree.nodes
    image = nodes["Dreamstill Texture"].image
    assert nodes["Dreamstill UV"].uv_map == "UVMap" and list(cube.data.uv_layers.keys()) == ["UVMap"]
    assert tuple(image.size) == (8, 8) and image.packed_file is not None
    assert image_grey(image) == pytest.approx(6 / 255)  # the final update, step 6
    links = nodes["Principled BSDF"].inputs["Base Color"].links
    assert links[0].from_node == nodes["Dreamstill Texture"]
    assert cube["dreamstill_job_id"] == item.job_id and cube["dreamstill_state"] == "done"


def test_texture_of_a_mesh_without_uvs_writes_the_backends_unwrap_as_a_new_uv_map(addon, scene, server):
    """No UV map: the job bakes into its own unwrap, and the add-on writes each triangle corner's UV into a new
    "Dreamstill UV" map (the fake runner puts triangle j's corners at ((j mod 8) + 0.5) / 8). An icosphere: every
    face a triangle, so each loop is the corner of exactly one triangle."""
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=1)
    ball = bpy.context.active_object
    ball.data.uv_layers.remove(ball.data.uv_layers[0])
    ball.data.update()  # tag it, so the evaluated mesh is rebuilt
    before = mesh_state(ball)
    assert bpy.ops.dreamstill.texture(prompt="a red ball", server=server, **fast()) == {"FINISHED"}
    assert scene.dreamstill.queue[0].state == "DONE", scene.dreamstill.queue[0].message
    np.testing.assert_array_equal(mesh_state(ball)[0], before[0])
    assert ball.data.uv_layers.active.name == "Dreamstill UV"
    uv = np.empty(2 * len(ball.data.loops), np.float32)
    ball.data.uv_layers["Dreamstill UV"].data.foreach_get("uv", uv)
    ball.data.calc_loop_triangles()
    loops = np.empty(60, np.int32)
    ball.data.loop_triangles.foreach_get("loops", loops)
    expected = np.repeat((np.arange(20) % 8 + 0.5) / 8, 3)
    np.testing.assert_allclose(uv.reshape(-1, 2)[loops], np.stack([expected, expected], axis=1))
    assert ball.data.materials[0].node_tree.nodes["Dreamstill UV"].uv_map == "Dreamstill UV"


def test_refine_makes_a_new_object_beside_the_original(addon, scene, server):
    """Refine sends the monkey's mesh; the (fake) result streams into a new object standing beside it, as large as
    it, while the monkey is untouched."""
    bpy.ops.mesh.primitive_monkey_add(size=2.0, location=(0.0, 0.0, 1.0))
    monkey = bpy.context.active_object
    before = mesh_state(monkey)
    result = bpy.ops.dreamstill.refine(prompt="a blue sphere", keep_shape=0.8, server=server, **fast())
    assert result == {"FINISHED"}, scene.dreamstill.status
    item = scene.dreamstill.queue[0]
    assert item.state == "DONE", item.message
    new = bpy.data.objects[item.object_name]
    assert new != monkey and new.name == "blue sphere" and new.users_collection[0].name == "Dreamstill"
    spec = module_of("proto").JobSpec.from_json(item.spec_json)
    assert spec.mode == "refine" and spec.keep_shape == pytest.approx(0.8)  # a Blender float is 32-bit
    np.testing.assert_array_equal(mesh_state(monkey)[0], before[0])
    triangles = len(module_of("scene_mesh").read_mesh(monkey).faces)
    assert len(new.data.polygons) == triangles  # the fake echoes the sent triangles
    source, made = world_bbox(monkey), world_bbox(new)
    assert made[0, 0] > source[1, 0]  # wholly to its +X side
    assert made[0, 2] == pytest.approx(source[0, 2], abs=1e-4)  # on the same ground
    assert np.ptp(made, axis=0).max() == pytest.approx(np.ptp(source, axis=0).max(), rel=1e-4)


def test_mesh_jobs_say_what_is_wrong_in_the_panel(addon, scene, server):
    settings = scene.dreamstill
    with pytest.raises(RuntimeError, match=r"select a mesh object first \(the active object is nothing\)"):
        bpy.ops.dreamstill.texture(prompt="a red cube", server=server, **fast())
    assert settings.status_error and "select a mesh object first" in settings.status
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=400, y_subdivisions=400)
    with pytest.raises(RuntimeError, match="is too large to send"):
        bpy.ops.dreamstill.refine(prompt="a red cube", server=server, **fast())
    assert "is too large to send" in settings.status and "Decimate" in settings.status
    with pytest.raises(RuntimeError, match="Mode Texture works on a mesh: select one and press Texture or Refine"):
        bpy.ops.dreamstill.generate(prompt="a red cube", mode="texture", server=server, **fast())
    assert not len(settings.queue)


def test_blender_installed_the_bundled_pyzmq_wheel(addon):
    """Blender unpacked the zip's wheel (re-packed from this machine's pyzmq) into the extensions' site-packages."""
    site = Path(_USER) / "extensions" / ".local" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    packages = site / "site-packages"
    assert (packages / "zmq" / "__init__.py").is_file()
    assert any(p.suffix == ".so" or ".so." in p.name for p in (packages / "zmq").rglob("*"))
    assert list(packages.glob("pyzmq-*.dist-info/RECORD"))
