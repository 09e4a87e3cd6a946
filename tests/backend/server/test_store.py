"""The job store: writes that fail whole (full disk), atomic job folders, and recovery of a damaged store."""

from __future__ import annotations

import errno
import json
import logging

import numpy as np
import pytest

from dreamstill.backend.server import store as store_module
from dreamstill.backend.server.store import (
    INPUT_MESH_FILE,
    JobStore,
    StoreWriteError,
    read_input_mesh,
    read_manifest,
    write_manifest,
)
from dreamstill.protocol import Done, Failed, InputMesh, JobSpec, Progress


def spec(**kw) -> JobSpec:
    return JobSpec(prompt="a red cube", steps=10, **kw)


def lines(store: JobStore, job_id: str) -> list[dict]:
    return [json.loads(line) for line in (store.job_dir(job_id) / "events.jsonl").read_text().splitlines()]


def test_a_failed_write_leaves_no_cut_line_and_says_disk_full(tmp_path, monkeypatch):
    store = JobStore(tmp_path)
    job = store.create(spec(), owner="tag:1")
    before = (store.job_dir(job.job_id) / "events.jsonl").read_bytes()

    def half_then_full(fd, data):  # the disk fills in the middle of the line
        import os

        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_append_bytes", half_then_full)
    with pytest.raises(StoreWriteError) as err:
        store.log_event(job.job_id, Failed("x", "y" * 200))
    assert err.value.disk_full
    assert (store.job_dir(job.job_id) / "events.jsonl").read_bytes() == before  # cut back to the last whole line

    monkeypatch.setattr(store_module, "_append_bytes", lambda fd, data: len(data) - 1)  # a short write, no error
    with pytest.raises(StoreWriteError):
        store.log(job.job_id, {"type": "started", "t": 1.0})
    assert (store.job_dir(job.job_id) / "events.jsonl").read_bytes() == before


def test_create_is_whole_or_nothing(tmp_path, monkeypatch):
    store = JobStore(tmp_path)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "_append_bytes", full)
    with pytest.raises(StoreWriteError) as err:
        store.create(spec())
    assert err.value.disk_full
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # no empty job folder, no staging folder
    job = store.create(spec(), owner="key:abc")
    assert lines(store, job.job_id)[0]["owner"] == "key:abc"
    assert [j.owner for j in JobStore(tmp_path).load()] == ["key:abc"]


def finished_job(store: JobStore, tmp_path, seed=0) -> str:
    job = store.create(spec(seed=seed))
    folder = store.job_dir(job.job_id)
    store.log(job.job_id, {"type": "started", "t": 1.0})
    (folder / "asset.glb").write_bytes(b"glTF" + bytes(100))
    names = write_manifest(folder, [str(folder / "asset.glb"), "/etc/hostname"], seconds=2.5)
    assert names == ["asset.glb"]  # files outside the job folder are not results
    store.log_event(job.job_id, Progress(10, 10, 0.1, 0.0))
    store.log_event(job.job_id, Done(files=names, seconds=2.5))
    return job.job_id


def test_truncated_terminal_line_with_a_verified_manifest_is_still_done(tmp_path):
    store = JobStore(tmp_path)
    job_id = finished_job(store, tmp_path)
    events = store.job_dir(job_id) / "events.jsonl"
    events.write_bytes(events.read_bytes()[:-20])  # a crash cut the done line
    (job,) = JobStore(tmp_path).load()
    assert job.state == "done" and isinstance(job.terminal, Done) and job.terminal.files == ["asset.glb"]
    files = store.result_files(job_id, job.terminal.files)
    assert files[0]["size"] == 104 and len(files[0]["sha256"]) == 64

    (store.job_dir(job_id) / "asset.glb").write_bytes(b"short")  # the manifest no longer verifies
    assert read_manifest(store.job_dir(job_id)) is None


def test_damaged_folders_are_skipped_with_a_warning_and_the_rest_loads(tmp_path, caplog):
    store = JobStore(tmp_path)
    good = finished_job(store, tmp_path, seed=1)
    bad_spec = store.create(spec(seed=2)).job_id
    (store.job_dir(bad_spec) / "spec.json").write_text("{not json")
    dir_events = store.create(spec(seed=3)).job_id
    (store.job_dir(dir_events) / "events.jsonl").unlink()
    (store.job_dir(dir_events) / "events.jsonl").mkdir()  # events.jsonl is a directory
    with caplog.at_level(logging.WARNING, logger="dreamstill.server"):
        jobs = JobStore(tmp_path).load()
    assert [j.job_id for j in jobs] == [good]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert bad_spec in warned and dir_events in warned


def test_unfinished_jobs_are_requeued_resumed_or_failed(tmp_path):
    store = JobStore(tmp_path)
    queued = store.create(spec(seed=1)).job_id
    resumable = store.create(spec(seed=2, checkpoint_every=5)).job_id
    store.log(resumable, {"type": "started", "t": 1.0})
    (store.job_dir(resumable) / "checkpoint.pt").write_text("5")
    lost = store.create(spec(seed=3)).job_id
    store.log(lost, {"type": "started", "t": 1.0})
    jobs = {j.job_id: j for j in JobStore(tmp_path).load()}
    assert jobs[queued].state == "queued" and not jobs[queued].resume
    assert jobs[resumable].state == "queued" and jobs[resumable].resume
    assert jobs[lost].state == "failed" and jobs[lost].terminal.code == "interrupted"
    assert lines(store, lost)[-1]["type"] == "failed"  # recorded, so the next start agrees


def test_result_names_never_read_the_files(tmp_path, monkeypatch):
    store = JobStore(tmp_path)
    job_id = finished_job(store, tmp_path)
    monkeypatch.setattr(store_module, "_sha", lambda path: pytest.fail("hashed a result file"))
    assert store.result_names(job_id, ["asset.glb", "missing.glb", "../../etc/passwd"]) == ["asset.glb"]
    assert store.result_files(job_id, ["asset.glb"])[0]["name"] == "asset.glb"  # digest from the manifest


def test_delete_removes_the_folder(tmp_path):
    store = JobStore(tmp_path)
    job_id = finished_job(store, tmp_path)
    store.delete(job_id)
    assert not store.job_dir(job_id).exists() and JobStore(tmp_path).load() == []


def test_ids_rise_strictly_in_submission_order_even_within_a_millisecond(tmp_path, monkeypatch):
    store = JobStore(tmp_path)
    monkeypatch.setattr(store_module.time, "time", lambda: 1000.0)
    ids = [store.new_id() for _ in range(50)]
    assert ids == sorted(ids) and len(set(i.split("-")[0] for i in ids)) == 50


def test_the_input_mesh_is_stored_with_the_job_and_read_back(tmp_path):
    """A texture job's mesh is written into its folder with spec.json (input_mesh.npz) and reads back equal; a
    job without one has none; a damaged file is a ValueError that says to submit again."""
    store = JobStore(tmp_path)
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    mesh = InputMesh(vertices, [[0, 1, 2]], np.array([[[0, 0], [1, 0], [0, 1]]], np.float32))
    job = store.create(JobSpec(prompt="a red cube", mode="texture"), mesh=mesh)
    back = read_input_mesh(store.job_dir(job.job_id))
    np.testing.assert_array_equal(back.vertices, vertices)
    np.testing.assert_array_equal(back.faces, [[0, 1, 2]])
    np.testing.assert_array_equal(back.uvs, mesh.uvs)
    assert read_input_mesh(store.job_dir(store.create(spec()).job_id)) is None
    (store.job_dir(job.job_id) / INPUT_MESH_FILE).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="input_mesh.npz cannot be read .* submit the job again"):
        read_input_mesh(store.job_dir(job.job_id))
