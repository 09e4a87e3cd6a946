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

from dreamstill.backend.server import Server, ServerConfig, is_loopback, make_keys
from dreamstill.backend.server.testing import result_bytes
from dreamstill.protocol import Cancelled, Done, Failed, JobSpec, JobSpecError, MeshUpdate, Preview, Progress
from dreamstill.protocol.client import (
    Client,
    ServerError,
    ServerUnavailable,
    client_secret,
    load_client_keys,
    routing_id,
)
from dreamstill.protocol.messages import REQUESTS, Message, decode, encode
from dreamstill.protocol.wire import ProtocolError

RUNNER = "dreamstill.backend.server.testing:fake_runner"
FAST = ServerConfig(
    progress_interval_s=0, preview_interval_s=0, mesh_interval_s=0, chunk_bytes=64 * 1024, cancel_grace_s=20
)


def spec(steps=5, seed=0, preview_every=0, mesh_every=0, **options) -> JobSpec:
    options.setdefault("fake_step_s", 0.01)
    return JobSpec(
        prompt="a red cube", steps=steps, seed=seed, preview_every=preview_every, mesh_every=mesh_every, options=options
    )


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


def test_bad_spec_is_refused_on_both_sides(client, raw_dealer):
    with pytest.raises(JobSpecError, match="steps"):
        client.submit(JobSpec(prompt="a cube", steps=0))
    bad = JobSpec(prompt="a cube").to_dict()
    bad["resolution"] = 5000
    from dreamstill.protocol.wire import pack

    reply = raw_request(raw_dealer, pack("submit", {"spec": bad}, rid="9"))
    assert reply.type == "error" and reply.payload["code"] == "bad_spec" and reply.rid == "9"
    assert "resolution" in reply.payload["message"]
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
        if len(frames) > 1:  # a request is one frame: refused before it is decoded
            expected = ProtocolError("malformed", "")
    except ProtocolError as err:
        expected = err if len(frames) == 1 else ProtocolError("malformed", "")
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
            assert [e.step for e in events if isinstance(e, Progress)][-1] == 3
            paths = c.fetch_result(job, tmp_path / "out")
            glb = [p for p in paths if p.suffix == ".glb"]
            assert glb and glb[0].read_bytes()[:4] == b"glTF"
