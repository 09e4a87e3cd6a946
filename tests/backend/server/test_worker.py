"""The worker's error codes and the files it reports: no path of the server's disk leaves it."""

from __future__ import annotations

import errno

from dreamstill.backend.server.store import read_manifest
from dreamstill.backend.server.worker import _final_event, classify
from dreamstill.protocol import Cancelled, Done, Failed


def test_cpu_out_of_memory_is_out_of_memory():
    text = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 85899345920 bytes. Error code 12"
    code, message, fatal = classify(RuntimeError(text))
    assert (code, fatal) == ("out_of_memory", True) and "lower resolution" in message
    assert classify(MemoryError())[0] == "out_of_memory"
    assert classify(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))[0] == "out_of_memory"


def test_full_disk_and_other_errors():
    code, message, fatal = classify(OSError(errno.ENOSPC, "No space left on device"))
    assert (code, fatal) == ("disk_full", False) and "free space" in message
    code, message, fatal = classify(ValueError("bad"))
    assert (code, fatal) == ("internal_error", False) and "error.log" in message and "/" not in message


def test_done_is_recorded_in_the_manifest_with_relative_names(tmp_path):
    (tmp_path / "asset.glb").write_bytes(b"glTF....")
    (tmp_path / "asset_views.png").write_bytes(b"png")
    done = _final_event(
        Done(files=[str(tmp_path / "asset.glb"), str(tmp_path / "asset_views.png")], seconds=3), tmp_path
    )
    assert done.files == ["asset.glb", "asset_views.png"] and done.seconds == 3
    manifest = read_manifest(tmp_path)
    assert [(e["name"], e["size"]) for e in manifest["files"]] == [("asset.glb", 8), ("asset_views.png", 3)]


def test_an_unwritable_disk_becomes_disk_full(tmp_path, monkeypatch):
    failed = _final_event(Failed("unwritable_output", "cannot write x: [Errno 28] No space left on device"), tmp_path)
    assert failed.code == "disk_full"
    assert _final_event(Cancelled(3), tmp_path) == Cancelled(3)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dreamstill.backend.server.store.write_manifest", full)
    (tmp_path / "a.glb").write_bytes(b"x")
    assert _final_event(Done(files=[str(tmp_path / "a.glb")]), tmp_path).code == "disk_full"


def test_a_worker_process_sees_only_its_device_and_runs_in_its_own_folder(tmp_path):
    import json
    import subprocess
    import sys

    code = (
        "import json, os, sys; from dreamstill.backend.server.worker import prepare_process; "
        "prepare_process(sys.argv[1], 3, sys.argv[2]); "
        "print(json.dumps([os.environ['CUDA_VISIBLE_DEVICES'], os.getcwd(), os.environ['OMP_NUM_THREADS']]))"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "DREAMSTILL_THREADS")}
    for device, visible in (("cuda:1", "1"), ("cpu", "")):
        out = subprocess.run([sys.executable, "-c", code, device, str(tmp_path)], capture_output=True, text=True,
                             env=env, check=True)  # fmt: skip
        shown, cwd, threads = json.loads(out.stdout)
        assert shown == visible and cwd == str(tmp_path) and 1 <= int(threads) <= 3
