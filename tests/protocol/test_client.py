"""The client against a scripted server: the server's own errors are raised, a hostile server cannot make poll()
raise, the inbox keeps only the newest state per job, list_jobs pages, chunks echo their token, and the owner
secret is one per user."""

from __future__ import annotations

import json
import stat
import threading

import numpy as np
import pytest
import zmq

from dreamstill.protocol import Done, Preview, Progress
from dreamstill.protocol.client import Client, ServerError, client_secret, routing_id
from dreamstill.protocol.messages import Message, decode, encode

_count = iter(range(10**6))


class ScriptedServer:
    """A ROUTER on inproc that answers each request with ``answer(msg) -> list of frame lists`` (in a thread)."""

    def __init__(self, answer, requests: int = 1):
        self.address = f"inproc://scripted-{next(_count)}"
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.bind(self.address)
        self.seen: list[Message] = []
        self.thread = threading.Thread(target=self._serve, args=(answer, requests), daemon=True)
        self.thread.start()

    def _serve(self, answer, requests):
        for _ in range(requests):
            if not self.sock.poll(10_000):
                return
            ident, *frames = self.sock.recv_multipart()
            msg = decode(frames)
            self.seen.append(msg)
            for reply in answer(msg):
                self.sock.send_multipart([ident, *reply])

    def close(self):
        self.thread.join(15)
        self.sock.close(0)


def test_an_error_without_rid_is_raised_as_the_servers_error():
    def answer(msg):
        error = json.dumps({"v": 1, "type": "error", "body": {"code": "disk_full", "message": "the disk is full"}})
        return [[error.encode()]]

    server = ScriptedServer(answer)
    try:
        with Client(server.address, timeout_s=10, owner_secret=b"t") as c:
            with pytest.raises(ServerError) as err:  # not ServerUnavailable after 10 s
                c.list_jobs()
            assert err.value.code == "disk_full" and "disk is full" in str(err.value)
    finally:
        server.close()


def test_a_hostile_server_cannot_make_poll_raise():
    header = {"v": 1, "type": "preview", "job": "j1", "body": {"step": 1}}
    header["arrays"] = [{"name": "rgba", "dtype": "uint8", "shape": [0, 2**62, 4]}]
    evil = [json.dumps(header).encode(), b""]

    def answer(msg):
        return [evil, encode(Message("pong", rid=msg.rid, payload={"server_id": "s", "time": 0.0}))]

    server = ScriptedServer(answer)
    try:
        with Client(server.address, timeout_s=10, owner_secret=b"t") as c:
            c.ping()
            assert c.poll() == []
            assert c.errors[-1][0] == "protocol" and c.errors[-1][1] == "bad_array"
    finally:
        server.close()


def test_inbox_keeps_the_newest_state_and_the_end():
    def answer(msg):
        events = [Progress(1, 9, 1.0, 1.0), Preview(1, np.zeros((2, 2, 4), np.uint8)), Progress(2, 9, 0.5, 1.0)]
        events += [Preview(2, np.ones((2, 2, 4), np.uint8)), Progress(3, 9, 0.2, 0.0), Done(files=["asset.glb"])]
        frames = [encode(e, job_id="job1") for e in events]
        frames.append(encode(Progress(4, 9, 0.1, 0.0), job_id="job1"))  # after the end: ignored
        return [*frames, encode(Message("pong", rid=msg.rid, payload={"server_id": "s", "time": 0.0}))]

    server = ScriptedServer(answer)
    try:
        with Client(server.address, timeout_s=10, owner_secret=b"t") as c:
            c.ping()
            got = c.poll()
            assert [type(e).__name__ for _, e in got] == ["Preview", "Progress", "Done"]
            assert got[0][1].step == 2 and got[1][1].step == 3
            assert [type(e) for e in c.events("job1")] == [Done]  # the end is remembered for events()
    finally:
        server.close()


def test_list_jobs_follows_pages_and_fetch_echoes_the_token(tmp_path):
    pages = {None: ([{"job_id": "b"}, {"job_id": "a9"}], "a9"), "a9": ([{"job_id": "a1"}], None)}
    data = np.frombuffer(b"0123456789", np.uint8)

    def answer(msg):
        if msg.type == "list_jobs":
            jobs, more = pages[msg.payload.get("before")]
            payload = {"jobs": jobs, **({"next": more} if more else {})}
            return [encode(Message("job_list", rid=msg.rid, payload=payload))]
        if msg.payload.get("name") is None:
            files = [{"name": "asset.glb", "size": 10, "sha256": __import__("hashlib").sha256(data).hexdigest()}]
            return [encode(Message("result_files", job_id="j", rid=msg.rid, payload={"files": files}))]
        offset = msg.payload["offset"]
        chunk = {"name": "asset.glb", "offset": offset, "size": 10, "eof": offset + 4 >= 10, "token": f"t{offset}"}
        chunk["data"] = data[offset : offset + 4]
        return [encode(Message("file_chunk", job_id="j", rid=msg.rid, payload=chunk))]

    server = ScriptedServer(answer, requests=6)
    try:
        with Client(server.address, timeout_s=10, owner_secret=b"t") as c:
            assert [j["job_id"] for j in c.list_jobs()] == ["b", "a9", "a1"]
            (path,) = c.fetch_result("j", tmp_path)
            assert path.read_bytes() == b"0123456789"
        tokens = [m.payload.get("token") for m in server.seen if m.type == "fetch_result" and "name" in m.payload]
        assert tokens == [None, "t0", "t4"]  # each chunk request echoes the previous chunk's token
    finally:
        server.close()


def test_client_secret_is_made_once_private_and_gives_one_owner_tag(tmp_path):
    first = client_secret(tmp_path)
    assert client_secret(tmp_path) == first and len(first) == 32
    assert stat.S_IMODE((tmp_path / "client.id").stat().st_mode) == 0o600
    a, b = routing_id(first), routing_id(first)
    assert a != b and a[:10] == b[:10] and len(a) == 16 and a.startswith(b"ds")
    assert routing_id(b"other")[:10] != a[:10]
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "client.id").mkdir()  # cannot be read or written: a secret for this process only
    assert len(client_secret(tmp_path / "ro")) == 32
