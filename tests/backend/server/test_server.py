"""Server + client over real ZeroMQ sockets on loopback, with the spawned worker running a fake job runner
(backend/server/testing.py): streaming, cancel, faults in the worker, restarts, several clients, backpressure,
CURVE, malformed input (hypothesis) and one end-to-end job through the real engine."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamstill.backend.server import ModelCatalog, Server, ServerConfig, is_loopback, make_keys
from dreamstill.backend.server.testing import fake_spec, result_bytes
from dreamstill.protocol import Cancelled, Done, Failed, JobSpec, JobSpecError, MeshUpdate, Preview, Progress
from dreamstill.protocol.client import (
    Client,
    ServerError,
    ServerUnavailable,
    client_secret,
    load_client_keys,
    routing_id,
)
from dreamstill.protocol.events import FINISH_PHASES, OPTIMIZE_PHASES
from dreamstill.protocol.messages import REQUESTS, Message, decode, encode
from dreamstill.protocol.wire import ProtocolError

RUNNER = "dreamstill.backend.server.testing:fake_runner"
FAST = ServerConfig(
    progress_interval_s=0, preview_interval_s=0, mesh_interval_s=0, chunk_bytes=64 * 1024, cancel_grace_s=20
)


spec = fake_spec


def worker_pid(server, index=0):
    return server.pool.slots[index].handle.pid


def wait_progress(client, job_id, step, timeout_s=60):
    for event in client.events(job_id, timeout_s=timeout_s):
        if isinstance(event, Progress) and event.step >= step:
            return event
        assert not isinstance(event, (Done, Failed, Cancelled)), event
    raise AssertionError("no progress")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server("tcp://127.0.0.1:*", store_dir=tmp_path_factory.mktemp("store"), runner=RUNNER, config=FAST)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server):
    c = Client(server.address, timeout_s=20)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def raw_dealer(server):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.address)
    try:
        yield sock
    finally:
        sock.close(0)


def raw_request(sock, frames, timeout_s=20):
    sock.send_multipart(frames)
    assert sock.poll(timeout_s * 1000), "the server did not answer"
    return decode(sock.recv_multipart())


def test_job_streams_to_done_and_result_is_fetchable(client, tmp_path):
    job = client.submit(spec(steps=6, seed=4, preview_every=2, mesh_every=3, fake_file_bytes=150_000))
    events = list(client.events(job, timeout_s=60))
    assert isinstance(events[-1], Done) and sum(isinstance(e, Done) for e in events) == 1
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(steps) and steps[-1] == 6
    assert any(isinstance(e, Preview) for e in events)
    finals = [e for e in events if isinstance(e, MeshUpdate) and e.final]
    assert len(finals) == 1 and finals[0].faces.max() < len(finals[0].vertices)
    status = client.status(job)
    assert status["state"] == "done" and status["files"] == ["asset.glb"] and status["step"] == 6
    (path,) = client.fetch_result(job, tmp_path)  # 150 kB in 64 kB chunks
    assert path.name == "asset.glb" and path.read_bytes() == result_bytes(4, 150_000)
    assert job in [j["job_id"] for j in client.list_jobs()]


def test_a_texture_jobs_mesh_is_stored_and_reaches_the_runner(server, client):
    """The mesh travels as array frames of the submit, lands in the job folder and the worker hands it to the
    runner (the fake runner reports its counts and streams it back with a texture); a refine job without UVs too."""
    import numpy as np

    from dreamstill.backend.server.store import read_input_mesh
    from dreamstill.protocol import InputMesh

    rng = np.random.default_rng(1)
    vertices = rng.standard_normal((30, 3)).astype(np.float32)
    faces = rng.integers(0, 30, (40, 3)).astype(np.int32)
    uvs = rng.random((40, 3, 2)).astype(np.float32)
    texture = JobSpec.from_dict({**spec(steps=3, mesh_every=1).to_dict(), "mode": "texture"})
    job = client.submit(texture, mesh={"vertices": vertices, "faces": faces, "uvs": uvs})
    events = list(client.events(job, timeout_s=60))
    done = events[-1]
    assert isinstance(done, Done), done
    assert (done.metrics["input_vertices"], done.metrics["input_faces"], done.metrics["input_uvs"]) == (30, 40, True)
    final = [e for e in events if isinstance(e, MeshUpdate) and e.final][0]
    np.testing.assert_array_equal(final.uvs[final.faces], uvs)  # each corner's UV came back in the face's order
    stored = read_input_mesh(server.store.job_dir(job))
    np.testing.assert_array_equal(stored.vertices, vertices)
    np.testing.assert_array_equal(stored.uvs, uvs)
    refine = texture.to_dict() | {"mode": "refine"}
    job = client.submit(JobSpec.from_dict(refine), mesh=InputMesh(vertices, faces))
    assert list(client.events(job, timeout_s=60))[-1].metrics["input_uvs"] is False
    with pytest.raises(JobSpecError, match="'texture' works on a mesh, and none was sent"):
        client.submit(texture)


def test_bad_spec_is_refused_on_both_sides(client, raw_dealer):
    with pytest.raises(JobSpecError, match="steps"):
        client.submit(JobSpec(prompt="a cube", steps=0))
    bad = JobSpec(prompt="a cube").to_dict()
    bad["resolution"] = 5000
    from dreamstill.protocol.wire import pack

    reply = raw_request(raw_dealer, pack("submit", {"spec": bad}, rid="9"))
    assert reply.type == "error" and reply.payload["code"] == "bad_spec" and reply.rid == "9"
    assert "resolution" in reply.payload["message"]
    texture = JobSpec(prompt="a cube", mode="texture").to_dict()
    reply = raw_request(raw_dealer, pack("submit", {"spec": texture}, rid="10"))  # a texture job without its mesh
    assert reply.payload["code"] == "bad_spec" and "works on a mesh, and none was sent" in reply.payload["message"]
    with pytest.raises(ServerError) as err:
        client.status("no-such-job")
    assert err.value.code == "unknown_job"


def test_unknown_version_gets_a_clear_refusal(raw_dealer):
    frames = encode(Message("ping", rid="v"))
    header = json.loads(frames[0])
    header["v"] = 2
    reply = raw_request(raw_dealer, [json.dumps(header).encode()])
    assert reply.type == "error" and reply.payload["code"] == "unsupported_version" and reply.rid == "v"
    assert "version 1" in reply.payload["message"]


headers = st.builds(
    lambda v, kind, body, job: [
        json.dumps({"v": v, "type": kind, "body": body, **({"job": job} if job else {})}, default=str).encode()
    ],
    st.sampled_from([1, 1, 1, 0, "1", None]),
    st.sampled_from(list(REQUESTS) + ["done", "pong", ""]),
    st.dictionaries(
        st.sampled_from(["spec", "limit", "name", "offset", "x"]),
        st.none()
        | st.integers(-5, 5)
        | st.text(max_size=5)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        max_size=2,
    ),
    st.sampled_from([None, "nope", "../x", 5]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(frames=st.lists(st.binary(max_size=48), min_size=1, max_size=3) | headers)
def test_server_answers_malformed_frames_and_keeps_serving(raw_dealer, frames):
    try:
        expected = decode(frames, expect=REQUESTS)
    except ProtocolError as err:
        expected = err
    reply = raw_request(raw_dealer, frames)
    if isinstance(expected, ProtocolError):
        assert reply.type == "error" and reply.payload["code"] == expected.code
    else:
        assert reply.type in ("pong", "job_list", "error", "accepted", "job_status", "result_files")
    assert raw_request(raw_dealer, encode(Message("ping", rid="p"))).type == "pong"


def test_cancel_mid_job_within_a_step_and_cancel_is_idempotent(client):
    job = client.submit(spec(steps=300, fake_step_s=0.1))
    wait_progress(client, job, 2)
    status = client.cancel(job)
    assert status["state"] == "running" and status["cancel_requested"]
    rest = list(client.events(job, timeout_s=30))
    assert isinstance(rest[-1], Cancelled)
    assert rest[-1].step <= status["step"] + 2  # the step in flight, plus one for the cancel's trip
    assert client.cancel(job)["state"] == "cancelled"  # twice: harmless
    done = client.submit(spec(steps=2))
    assert isinstance(list(client.events(done, timeout_s=30))[-1], Done)
    assert client.cancel(done)["state"] == "done"  # a finished job stays finished


def test_cancel_a_queued_job(client):
    first = client.submit(spec(steps=200, fake_step_s=0.02))
    second = client.submit(spec(steps=3))
    assert client.status(second)["state"] == "queued"
    client.cancel(second)
    assert [type(e) for e in client.events(second, timeout_s=10)] == [Cancelled]
    client.cancel(first)
    assert isinstance(list(client.events(first, timeout_s=30))[-1], Cancelled)


def test_client_disconnecting_mid_job_does_not_disturb_the_job(server, tmp_path):
    first = Client(server.address, timeout_s=20)
    job = first.submit(spec(steps=40, seed=7, fake_step_s=0.02, mesh_every=1, fake_vertices=2000))
    wait_progress(first, job, 2)
    first.close()
    with Client(server.address, timeout_s=20) as second:
        events = list(second.events(job, timeout_s=60))  # attaches: newest state, then the end
        assert isinstance(events[-1], Done)
        assert second.fetch_result(job, tmp_path)[0].read_bytes() == result_bytes(7, 1000)


def test_two_clients_at_once(server, tmp_path):
    results, errors = {}, []

    def run(seed):
        try:
            with Client(server.address, timeout_s=30) as c:
                job = c.submit(spec(steps=10, seed=seed, preview_every=2))
                events = list(c.events(job, timeout_s=60))
                leftovers = c.poll()
                (path,) = c.fetch_result(job, tmp_path / str(seed))
                results[seed] = (job, events, leftovers, path.read_bytes())
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (11, 12)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert not errors, errors
    assert results[11][0] != results[12][0]
    for seed, (job, events, leftovers, data) in results.items():
        assert isinstance(events[-1], Done) and data == result_bytes(seed, 1000)
        assert all(job_id == job for job_id, _ in leftovers)  # nobody else's events


@pytest.mark.parametrize(
    "fault, code, restarts",
    [
        ({"fake_crash_at": 2}, "internal_error", False),
        ({"fake_oom_at": 2}, "out_of_memory", True),
        ({"fake_exit_at": 2}, "worker_died", True),
    ],
)
def test_worker_faults_fail_the_job_and_the_next_job_succeeds(server, client, fault, code, restarts):
    job = client.submit(spec(steps=5, **fault))
    wait_progress(client, job, 1)
    pid = worker_pid(server)
    last = list(client.events(job, timeout_s=60))[-1]
    assert isinstance(last, Failed) and last.code == code, last
    if code == "worker_died":
        assert "exited with code 3" in last.message and "step 1 of 5" in last.message
    follow = client.submit(spec(steps=2))
    assert isinstance(list(client.events(follow, timeout_s=60))[-1], Done)
    assert (worker_pid(server) != pid) == restarts


def test_worker_killed_mid_job(server, client):
    job = client.submit(spec(steps=500, fake_step_s=0.02))
    wait_progress(client, job, 2)
    pid = worker_pid(server)
    os.kill(pid, signal.SIGKILL)
    last = list(client.events(job, timeout_s=60))[-1]
    assert isinstance(last, Failed) and last.code == "worker_died" and "SIGKILL" in last.message
    assert client.status(job)["state"] == "failed"
    follow = client.submit(spec(steps=2))
    assert isinstance(list(client.events(follow, timeout_s=60))[-1], Done)
    assert worker_pid(server) != pid


def test_slow_client_gets_newest_state_not_a_backlog(server, client):
    """A client that does not read while a job streams 3 x 120 events receives a bounded number of them."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id(client_secret()))  # the same owner as this user's Clients
    sock.setsockopt(zmq.RCVHWM, 4)
    sock.setsockopt(zmq.RCVBUF, 64 * 1024)
    sock.connect(server.address)
    try:
        steps = 120
        accepted = raw_request(
            sock, encode(spec(steps=steps, preview_every=1, mesh_every=1, fake_step_s=0.002, fake_vertices=20_000))
        )
        job = accepted.job_id
        deadline = time.monotonic() + 60
        while client.status(job)["state"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.3)
        received = []
        while sock.poll(1000):
            received.append(decode(sock.recv_multipart()))
            if received[-1].is_terminal:
                break
        assert received[-1].type == "done"
        assert len(received) < 3 * steps / 2, len(received)  # most were superseded before they were sent
        meshes = [m.payload for m in received if m.type == "mesh"]
        assert meshes[-1].final and meshes[-1].step == steps  # the newest state did arrive
        progress = [m.payload.step for m in received if m.type == "progress"]
        assert progress[-1] == steps and progress == sorted(progress)
    finally:
        sock.close(0)
    # the reading client's inbox coalesces as well: one of each kind at most, then the end
    with Client(server.address, timeout_s=20) as late:
        late.attach(job)
        time.sleep(0.5)
        kinds = [type(e).__name__ for _, e in late.pump(2.0)]
        assert kinds.count("MeshUpdate") <= 1 and kinds[-1] == "Done"


def test_rate_limit_and_restart_keep_finished_results(tmp_path):
    store = tmp_path / "store"
    config = ServerConfig(progress_interval_s=0.25, chunk_bytes=64 * 1024)
    with Server("tcp://127.0.0.1:*", store_dir=store, runner=RUNNER, config=config) as first:
        with Client(first.address, timeout_s=20) as c:
            job = c.submit(spec(steps=60, seed=5, fake_step_s=0.01, fake_file_bytes=100_000))
            events = list(c.events(job, timeout_s=60))
            progress = [e for e in events if isinstance(e, Progress)]
            assert progress[-1].step == 60 and len(progress) <= 10  # ~0.6 s of steps at most 4 a second
            running = c.submit(spec(steps=1000, fake_step_s=0.05))
            wait_progress(c, running, 1)
            first.stop()  # a stop with a job running: the client is told, the job is marked interrupted
            last = list(c.events(running, timeout_s=20))[-1]
            assert isinstance(last, Failed) and last.code == "interrupted"
    with Server("tcp://127.0.0.1:*", store_dir=store, runner=RUNNER, config=config) as second:
        with Client(second.address, timeout_s=20) as c:
            assert {j["job_id"]: j["state"] for j in c.list_jobs()} == {job: "done", running: "failed"}
            assert c.status(job)["step"] == 60
            events = list(c.events(job, timeout_s=20))
            assert [type(e) for e in events] == [Progress, Done]
            (path,) = c.fetch_result(job, tmp_path / "out")
            assert path.read_bytes() == result_bytes(5, 100_000)
            with pytest.raises(ServerError) as err:
                c.fetch_result(running, tmp_path / "out")
            assert err.value.code == "no_result"


def test_curve_on_loopback_refuses_clients_without_the_key(tmp_path):
    make_keys(tmp_path / "keys")
    with Server("tcp://127.0.0.1:*", store_dir=tmp_path / "store", runner=RUNNER, keys_dir=tmp_path / "keys") as srv:
        with Client(srv.address, timeout_s=20, **load_client_keys(tmp_path / "keys")) as good:
            good.ping()
            job = good.submit(spec(steps=2))
            assert isinstance(list(good.events(job, timeout_s=60))[-1], Done)
        with Client(srv.address, timeout_s=1.5) as plain:  # no keys at all
            with pytest.raises(ServerUnavailable, match="dreamstill serve"):
                plain.ping()
        server_public = load_client_keys(tmp_path / "keys")["server_public_key"]
        with Client(
            srv.address, server_public_key=server_public, client_keys=zmq.curve_keypair(), timeout_s=1.5
        ) as stranger:  # knows the server, but its own key is not authorized
            with pytest.raises(ServerUnavailable, match="refused"):
                stranger.ping()


def test_non_loopback_bind_needs_keys(tmp_path):
    with pytest.raises(ValueError, match="dreamstill keys"):
        Server("tcp://0.0.0.0:5555", store_dir=tmp_path)
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://[::1]:1") and is_loopback("ipc:///tmp/x")
    assert is_loopback("tcp://localhost:*")
    assert not is_loopback("tcp://0.0.0.0:5555") and not is_loopback("tcp://192.168.1.5:5555")
    assert not is_loopback("tcp://eth0:5555")


def test_dead_server_is_noticed():
    silent = zmq.Context.instance().socket(zmq.ROUTER)  # accepts connections, never answers
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with Client(f"tcp://127.0.0.1:{port}", timeout_s=0.5, heartbeat_s=0.1) as c:
            with pytest.raises(ServerUnavailable, match=f"127.0.0.1:{port}.*dreamstill serve"):
                c.ping()
            deadline = time.monotonic() + 10
            with pytest.raises(ServerUnavailable, match="heartbeat"):
                while time.monotonic() < deadline:  # a GUI timer calling poll()
                    c.poll()
                    time.sleep(0.02)
    finally:
        silent.close(0)
    with Client("tcp://127.0.0.1:1", timeout_s=0.5) as nobody:  # nothing listens on port 1
        with pytest.raises(ServerUnavailable):
            nobody.submit(spec())


@pytest.mark.slow
def test_end_to_end_with_the_real_engine(tmp_path):
    pytest.importorskip("dreamstill.backend.engine", reason="the engine (run_job) is not importable here")
    real = JobSpec(
        prompt="a red cube",
        prior="tiny",
        steps=3,
        surface=False,  # the surface stage's phases are tests/backend/jobs/test_run.py's
        resolution=32,
        mesh_resolution=32,
        texture_size=0,
        batch_size=1,
        preview_every=2,
        seed=1,
    )
    with Server("tcp://127.0.0.1:*", store_dir=tmp_path / "store") as srv:
        with Client(srv.address, timeout_s=60) as c:
            job = c.submit(real)
            events = list(c.events(job, timeout_s=300))
            last = events[-1]
            if isinstance(last, Failed) and (last.code == "missing_weights" or "ImportError" in last.message):
                pytest.skip(f"the engine cannot run this job here yet: {last.message}")
            assert isinstance(last, Done), last
            steps = [e.step for e in events if isinstance(e, Progress) and e.phase in OPTIMIZE_PHASES]
            assert steps == sorted(steps) and 0 < steps[-1] <= 3  # a newer finishing phase may replace step 3
            assert c.status(job)["phase"] in (*OPTIMIZE_PHASES, *FINISH_PHASES)
            paths = c.fetch_result(job, tmp_path / "out")
            glb = [p for p in paths if p.suffix == ".glb"]
            assert glb and glb[0].read_bytes()[:4] == b"glTF"


# ---------------------------------------------------------------------- hardening (issue 20)
def serving(store, **config):
    """A server on a random loopback port with the fake runner and FAST settings plus ``config``."""
    base = {
        "progress_interval_s": 0,
        "preview_interval_s": 0,
        "mesh_interval_s": 0,
        "chunk_bytes": 64 * 1024,
        "worker_backoff_s": (0.1,),
    }
    return Server("tcp://127.0.0.1:*", store_dir=store, runner=RUNNER, config=ServerConfig(**{**base, **config}))


def wait_for(predicate, what, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_full_disk_fails_the_running_job_holds_the_queue_and_recovers(tmp_path, monkeypatch):
    from dreamstill.backend.server import store as store_module

    full = threading.Event()
    real = store_module._append_bytes

    def append(fd, data):
        if full.is_set():
            raise OSError(28, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(store_module, "_append_bytes", append)
    with serving(tmp_path / "store", cancel_grace_s=3) as srv, Client(srv.address, timeout_s=20) as c:
        running = c.submit(spec(steps=2000, fake_step_s=0.02, fake_ignore_cancel=True))  # a worker that is stuck
        queued = c.submit(spec(steps=3, seed=9))
        wait_progress(c, running, 2)
        stuck_pid = worker_pid(srv)
        full.set()
        last = list(c.events(running, timeout_s=30))[-1]
        assert isinstance(last, Failed) and last.code == "disk_full" and "free space" in last.message
        with pytest.raises(ServerError) as err:  # nothing new is accepted while the disk is full
            c.submit(spec(steps=2))
        assert err.value.code == "disk_full"
        time.sleep(1.5)  # a few dispatch attempts while still full
        assert c.status(queued)["state"] == "queued" and c.ping() and c.server_info["disk_full"]
        full.clear()
        assert isinstance(list(c.events(queued, timeout_s=60))[-1], Done)
        assert worker_pid(srv) != stuck_pid  # not queued behind the stuck job: that worker was replaced
        wait_for(lambda: running not in srv._unwritten, "the held end to reach the disk")
    log_lines = (tmp_path / "store" / running / "events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in log_lines]  # every line whole
    assert records[-1]["type"] == "failed" and records[-1]["code"] == "disk_full"


def test_real_full_disk_on_a_small_tmpfs(tmp_path):
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with serving(disk, min_free_bytes=1 << 20) as srv, Client(srv.address, timeout_s=20) as c:
            filling = c.submit(spec(steps=2000, fake_step_s=0.02, fake_fill_at=3, fake_fill_bytes=8 << 20))
            queued = c.submit(spec(steps=3, seed=2))
            last = list(c.events(filling, timeout_s=60))[-1]
            assert isinstance(last, Failed) and last.code == "disk_full", last
            time.sleep(1.0)
            assert c.status(queued)["state"] == "queued"
            (disk / "filler.bin").unlink()
            assert isinstance(list(c.events(queued, timeout_s=60))[-1], Done)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_worker_start_failures_back_off_show_in_ping_and_fail_the_queue(tmp_path, monkeypatch):
    from dreamstill.backend.server import supervisor

    failures = {"left": 2}
    real = supervisor.WorkerHandle

    def flaky(*args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(11, "Resource temporarily unavailable")  # EAGAIN at fork
        return real(*args, **kwargs)

    monkeypatch.setattr(supervisor, "WorkerHandle", flaky)
    with serving(tmp_path / "store", worker_backoff_s=(0.3,), max_worker_start_failures=3) as srv:
        with Client(srv.address, timeout_s=20) as c:
            c.ping()
            assert c.server_info["workers"][0]["state"] == "backoff"
            assert "Resource temporarily unavailable" in c.server_info["workers"][0]["error"]
            job = c.submit(spec(steps=2))  # accepted, and run once a start works
            assert isinstance(list(c.events(job, timeout_s=60))[-1], Done)
            wait_for(lambda: (c.ping() or True) and c.server_info["workers"][0]["failures"] == 0, "a ready worker")
            failures["left"] = 10**6  # from now on no worker can start
            os.kill(worker_pid(srv), signal.SIGKILL)
            wait_for(lambda: srv.pool.slots[0].handle is None, "the worker's death")
            wait_for(lambda: srv.pool.slots[0].broken is not None, "three failed starts")
            doomed = c.submit(spec(steps=2))  # revives the slot once more; it fails again
            last = list(c.events(doomed, timeout_s=60))[-1]
            assert isinstance(last, Failed) and last.code == "worker_unavailable"
            assert "Resource temporarily unavailable" in last.message
            c.ping()
            assert c.server_info["workers"][0]["state"] == "broken"


def test_a_client_that_never_reads_gets_one_chunk_at_a_time(tmp_path):
    with serving(tmp_path / "store") as srv, Client(srv.address, timeout_s=20) as c:
        job = c.submit(spec(steps=2, fake_file_bytes=1_000_000))
        assert isinstance(list(c.events(job, timeout_s=60))[-1], Done)
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, routing_id(client_secret()))
        sock.connect(srv.address)
        try:
            for i in range(30):  # pipelined, nothing read in between
                sock.send_multipart(encode(Message("fetch_result", job_id=job, rid=f"f{i}",
                                                   payload={"name": "asset.glb", "offset": 0})))  # fmt: skip
            replies = [decode(sock.recv_multipart()) for _ in range(30) if sock.poll(20_000)]
            assert len(replies) == 30 and all(r.rid for r in replies)
            chunks = [r for r in replies if r.type == "file_chunk"]
            assert len(chunks) == 1 and len(chunks[0].payload["data"]) == 64 * 1024
            assert {r.payload["code"] for r in replies if r.type == "error"} == {"busy"}
            token = chunks[0].payload["token"]
            ask = {"name": "asset.glb", "offset": 64 * 1024, "token": token}
            assert raw_request(sock, encode(Message("fetch_result", job_id=job, rid="n", payload=ask))).type == (
                "file_chunk"
            )
        finally:
            sock.close(0)
        assert c.fetch_result(job, tmp_path / "out")[0].read_bytes() == result_bytes(0, 1_000_000)


def test_requests_with_extra_or_oversized_frames_are_refused(server, client):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.address)
    try:
        reply = raw_request(sock, [*encode(Message("ping", rid="many")), *([b""] * 100_000)])
        assert reply.type == "error" and reply.payload["code"] == "malformed" and reply.rid == "many"
        assert "100001" in reply.payload["message"]
        assert client.ping() < 20
        sock.send_multipart([*encode(Message("ping", rid="big")), b"\0" * (9 << 20)])  # one 9 MiB frame
        assert not sock.poll(2000)  # libzmq cut the connection at the frame (MAXMSGSIZE): nothing buffered
        assert client.ping() < 20
    finally:
        sock.close(0)


def test_every_reply_carries_its_rid_even_for_a_bad_offset(client, raw_dealer):
    job = client.submit(spec(steps=2))
    assert isinstance(list(client.events(job, timeout_s=60))[-1], Done)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id(client_secret()))
    sock.connect(client.address)
    try:
        ask = {"name": "asset.glb", "offset": 2**63}
        reply = raw_request(sock, encode(Message("fetch_result", job_id=job, rid="off", payload=ask)))
        assert reply.type == "error" and reply.rid == "off" and reply.payload["code"] == "bad_field"
        header = [b'{"v": 1, "type": "ping", "rid": "cut", "body": {']  # not JSON: its rid is still found
        reply = raw_request(sock, header)
        assert reply.payload["code"] == "malformed" and reply.rid == "cut"
    finally:
        sock.close(0)


def test_deeply_nested_options_are_refused_without_a_folder(server, raw_dealer):
    from dreamstill.protocol.wire import pack

    before = set(os.listdir(server.store.root))
    options: dict = {}
    inner = options
    for _ in range(600):
        inner["x"] = {}
        inner = inner["x"]
    body = {"spec": {**JobSpec(prompt="a cube", steps=2).to_dict(), "options": options}}
    reply = raw_request(raw_dealer, pack("submit", body, rid="deep"))
    assert reply.type == "error" and reply.payload["code"] == "bad_spec" and reply.rid == "deep"
    assert set(os.listdir(server.store.root)) == before


def test_quotas_and_retention(tmp_path):
    store = tmp_path / "store"
    config = {"max_queued_per_client": 2, "submits_per_minute_per_client": 4, "keep_jobs": 2}
    with serving(store, **config) as srv, Client(srv.address, timeout_s=20) as c:
        first, second = c.submit(spec(steps=3000, fake_step_s=0.02)), c.submit(spec(steps=3))
        with pytest.raises(ServerError, match="unfinished") as err:
            c.submit(spec(steps=3))
        assert err.value.code == "quota"
        c.cancel(second)
        c.cancel(first)
        for job in (first, second):
            assert isinstance(list(c.events(job, timeout_s=30))[-1], Cancelled)
        finished = []
        for _ in range(2):  # 4 submits used: the bucket is empty
            finished.append(c.submit(spec(steps=2)))
            assert isinstance(list(c.events(finished[-1], timeout_s=60))[-1], Done)
        third, fourth = finished
        with pytest.raises(ServerError, match="a minute") as err:
            c.submit(spec(steps=2))
        assert err.value.code == "quota"
        wait_for(lambda: len(c.list_jobs()) == 2, "retention to delete the oldest finished jobs")
        assert {j["job_id"] for j in c.list_jobs()} == {third, fourth}
        assert sorted(p.name for p in store.iterdir()) == sorted([third, fourth])


def test_priors_and_generators_only_from_what_the_server_offers(tmp_path):
    (tmp_path / "sd").mkdir()
    catalog = ModelCatalog.build({"mine": str(tmp_path / "sd")}, {})
    srv = Server("tcp://127.0.0.1:*", store_dir=tmp_path / "store", runner=RUNNER, config=FAST, catalog=catalog)
    with srv, Client(srv.address, timeout_s=20) as c:
        c.ping()
        assert "mine" in c.server_info["offers"]["priors"] and "builtin" in c.server_info["offers"]["generators"]
        for field, value in (("prior", "/etc/passwd"), ("generator", "/etc/hostname"), ("prior", str(tmp_path))):
            bad = spec(steps=2)
            setattr(bad, field, value)
            with pytest.raises(JobSpecError, match="does not offer") as err:
                c.submit(bad)
            assert "builtin" in str(err.value)
        named = spec(steps=2)
        named.prior = "mine"
        assert isinstance(list(c.events(c.submit(named), timeout_s=60))[-1], Done)


def test_error_messages_carry_no_server_paths(client, server):
    job = client.submit(spec(steps=4, fake_crash_at=2))
    last = list(client.events(job, timeout_s=60))[-1]
    assert isinstance(last, Failed) and last.code == "internal_error"
    root = str(server.store.root)
    assert root not in last.message and "error.log" in last.message
    assert root not in client.status(job)["message"]
    with pytest.raises(ServerError) as err:
        client.status("0000000000000-aaaaaa")
    assert root not in str(err.value)


def test_jobs_belong_to_their_owner_unless_shared(tmp_path):
    for shared in (False, True):
        with serving(tmp_path / f"store{shared}", shared=shared) as srv:
            alice = Client(srv.address, timeout_s=20, owner_secret=b"alice")
            bob = Client(srv.address, timeout_s=20, owner_secret=b"bob")
            alice_again = Client(srv.address, timeout_s=20, owner_secret=b"alice")  # another process of alice
            try:
                job = alice.submit(spec(steps=2))
                assert isinstance(list(alice.events(job, timeout_s=60))[-1], Done)
                assert alice_again.status(job)["state"] == "done"
                assert [j["job_id"] for j in alice_again.list_jobs()] == [job]
                if shared:
                    assert bob.status(job)["state"] == "done" and bob.fetch_result(job, tmp_path / "bob")
                    continue
                assert bob.list_jobs() == []
                for call in (bob.status, bob.cancel, bob.attach, lambda j: bob.fetch_result(j, tmp_path / "x")):
                    with pytest.raises(ServerError) as err:
                        call(job)
                    assert err.value.code == "unknown_job"
            finally:
                for c in (alice, bob, alice_again):
                    c.close()


def test_list_jobs_is_paged(tmp_path):
    with serving(tmp_path / "store", list_page_bytes=1500) as srv, Client(srv.address, timeout_s=20) as c:
        jobs = [c.submit(spec(steps=1, seed=i)) for i in range(12)]
        for job in jobs:
            list(c.events(job, timeout_s=60))
        page = c._request("list_jobs", payload={"limit": 100}).payload
        assert 0 < len(page["jobs"]) < 12 and page["next"] == page["jobs"][-1]["job_id"]
        assert [j["job_id"] for j in c.list_jobs(100)] == jobs[::-1]
        assert [j["job_id"] for j in c.list_jobs(5)] == jobs[::-1][:5]


def test_an_interrupted_checkpointing_job_resumes_after_a_restart(tmp_path):
    store = tmp_path / "store"
    with serving(store) as first, Client(first.address, timeout_s=20) as c:
        job = c.submit(spec(steps=400, fake_step_s=0.02, checkpoint_every=5))
        wait_progress(c, job, 12)
    assert (store / job / "checkpoint.pt").exists()
    with serving(store) as second, Client(second.address, timeout_s=20) as c:
        events = list(c.events(job, timeout_s=120))
        steps = [e.step for e in events if isinstance(e, Progress)]
        assert isinstance(events[-1], Done) and steps[-1] == 400
        assert min(steps) > 10  # continued from the checkpoint, not from step 1
        assert (store / job / "result.json").exists()
