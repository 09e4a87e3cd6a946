"""Abuse benchmark: what hostile or broken clients cost a `dreamstill serve` on loopback, one figure per attack.

    python benchmarks/server_abuse.py [--frames 1000000] [--fetches 120] [--pairs 2000]

Everything runs on 127.0.0.1 against servers started here with the fake job runner (backend/server/testing.py, no
torch), each attack bounded in count and in time. Run it against another checkout's code by pointing PYTHONPATH at
it (the servers are subprocesses and inherit it); the script uses only what both the old and the new server have.

1. frames:   a request of N empty frames; another client pings every 20 ms meanwhile: its worst ping, and when
             the attacker's answer came.
2. no-read:  a client pipelines fetch_result requests for a 16 MB result and never reads; then a second one does
             the same: the server's RSS growth, and 10 s later.
3. disk:     (a server in this process, the store's writes failing with ENOSPC while "full") a running job and a
             queued one: how the running one ends, and the time from space freed to the queued job's done.
4. queue:    submit-then-cancel pairs for up to 60 s, then 100 submits with a 900 KB negative_prompt: how many
             were accepted, the job folders kept, the store's size and the server's RSS.
5. retain:   300 submit-then-cancel pairs against `serve --keep-jobs 100`: the job folders kept.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq

from dreamstill.protocol import JobSpec
from dreamstill.protocol.messages import Message, decode, encode
from dreamstill.protocol.wire import pack

RUNNER = "dreamstill.backend.server.testing:fake_runner"
SERVE = "import sys; from dreamstill.backend.server.commands import main; sys.exit(main(sys.argv[1:]))"


# ---------------------------------------------------------------------- plumbing
def start_server(store: Path, *extra: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    argv = [sys.executable, "-c", SERVE, "serve", "--bind", address, "--store", str(store), "--runner", RUNNER, *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = dealer(address)
    deadline = time.monotonic() + 60
    while request(sock, "ping", timeout_s=2) is None:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the server did not start")
    sock.close(0)
    return proc, address


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dealer(address: str, routing_id: bytes | None = None, reads: bool = True):
    """A DEALER; ``reads=False``: one that stops taking data off TCP at once (tiny receive queue and buffer)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if not reads:
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.RCVBUF, 4096)
    sock.connect(address)
    return sock


_rids = iter(range(10**9))


def request(sock, kind: str, job_id=None, payload=None, timeout_s: float = 20.0) -> Message | None:
    """One request and its reply (other traffic is skipped); None when no reply came in time."""
    rid = f"b{next(_rids)}"
    if kind == "raw_submit":  # a spec dict sent as it is, unchecked
        frames = pack("submit", {"spec": payload}, rid=rid)
    elif isinstance(payload, JobSpec):
        frames = encode(payload, rid=rid)
    else:
        frames = encode(Message(kind, job_id=job_id, rid=rid, payload=payload))
    sock.send_multipart(frames)
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not sock.poll(left * 1000):
            return None
        msg = decode(sock.recv_multipart())
        if msg.rid == rid:
            return msg
    return None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spec(steps=3, **options) -> JobSpec:
    options.setdefault("fake_step_s", 0.01)
    return JobSpec(prompt="a red cube", steps=steps, preview_every=0, options=options)


def wait_state(sock, job_id: str, states: tuple, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = request(sock, "status", job_id=job_id, timeout_s=5)
        state = reply.payload["status"]["state"] if reply is not None and reply.type == "job_status" else None
        if state in states:
            return state
        time.sleep(0.1)
    return None


# ---------------------------------------------------------------------- attacks
def attack_frames(frames: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(Path(tmp) / "store")
        victim, attacker = dealer(address), dealer(address)
        try:
            base = rss_mb(proc.pid)
            done = threading.Event()
            times: dict[str, float] = {}

            def attack():
                message = [*encode(Message("ping", rid="attack")), *([b""] * (frames - 1))]
                attacker.send_multipart(message)
                times["sent"] = time.perf_counter()
                if attacker.poll(120_000):
                    times["answered"] = time.perf_counter()
                    times["code"] = decode(attacker.recv_multipart()).payload.get("code", "pong")
                done.set()

            thread = threading.Thread(target=attack, daemon=True)
            thread.start()
            worst, peak = 0.0, base
            while not done.wait(0.02):
                started = time.perf_counter()
                if request(victim, "ping", timeout_s=120) is None:
                    worst = float("inf")
                    break
                worst = max(worst, time.perf_counter() - started)
                peak = max(peak, rss_mb(proc.pid))
            thread.join(5)
            answer = times.get("answered", float("nan")) - times.get("sent", float("nan"))
            print(
                f"frames   {frames:,}-frame request: other client's worst ping {worst:.2f} s; attacker answered "
                f"{answer:.2f} s after sending ({times.get('code')}); server RSS {base:.0f} -> peak {peak:.0f} MB"
            )
        finally:
            victim.close(0)
            attacker.close(0)
            stop_server(proc)


def attack_never_reads(fetches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(Path(tmp) / "store")
        readers = [dealer(address, b"dsabusenotread" + bytes([i, 1]), reads=False) for i in range(2)]
        owner = dealer(address, b"dsabusenotread\xff\x01")  # the same owner tag: it may fetch the same job
        try:
            accepted = request(owner, "submit", payload=spec(steps=2, fake_file_bytes=16_000_000))
            job = accepted.job_id
            if wait_state(owner, job, ("done",), 60) != "done":
                raise RuntimeError("the result job did not finish")
            time.sleep(1.0)
            base = rss_mb(proc.pid)
            growth = []
            for sock in readers:  # the second connection has the same owner tag, so it may fetch too
                for i in range(fetches):
                    ask = {"name": "asset.glb", "offset": 0}
                    sock.send_multipart(encode(Message("fetch_result", job_id=job, rid=f"n{i}", payload=ask)))
                time.sleep(3.0)
                growth.append(rss_mb(proc.pid) - base)
            time.sleep(10.0)
            later = rss_mb(proc.pid) - base
            ping = dealer(address)
            started = time.perf_counter()
            answered = request(ping, "ping", timeout_s=30) is not None
            rtt = f"{time.perf_counter() - started:.3f} s" if answered else "unanswered"
            ping.close(0)
            print(
                f"no-read  {fetches} fetch_result of a 16 MB file, never read: server RSS +{growth[0]:.0f} MB; "
                f"a second such client: +{growth[1]:.0f} MB; 10 s later +{later:.0f} MB; "
                f"another client's ping {rtt}"
            )
        finally:
            for sock in (*readers, owner):
                sock.close(0)
            stop_server(proc)


def attack_full_disk() -> None:
    from dreamstill.backend.server import Server, ServerConfig
    from dreamstill.backend.server import store as store_module
    from dreamstill.protocol.client import Client

    full = threading.Event()
    error = getattr(store_module, "StoreWriteError", OSError)
    real_log = store_module.JobStore.log

    def log(self, *args, **kwargs):
        if full.is_set():
            raise error(errno.ENOSPC, "No space left on device")
        return real_log(self, *args, **kwargs)

    store_module.JobStore.log = log
    config = ServerConfig(progress_interval_s=0, preview_interval_s=0, mesh_interval_s=0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with Server("tcp://127.0.0.1:*", store_dir=Path(tmp) / "s", runner=RUNNER, config=config) as srv:
                with Client(srv.address, timeout_s=20) as c:
                    running = c.submit(spec(steps=3000, fake_step_s=0.02))
                    queued = c.submit(spec(steps=3))
                    for event in c.events(running, timeout_s=60):
                        if type(event).__name__ == "Progress" and event.step >= 2:
                            break
                    full.set()
                    end = _end_within(c, running, 15)
                    time.sleep(2.0)
                    full.clear()
                    freed = time.perf_counter()
                    after = _end_within(c, queued, 30)
                    recovery = f"{time.perf_counter() - freed:.2f} s" if after == "done" else f"never ({after})"
                    print(f"disk     running job under a full disk: {end}; queued job done after space came back: "
                          f"{recovery}")  # fmt: skip
    finally:
        store_module.JobStore.log = real_log


def _end_within(client, job_id: str, seconds: float) -> str:
    try:
        for event in client.events(job_id, timeout_s=seconds):
            name = type(event).__name__
            if name in ("Done", "Failed", "Cancelled"):
                return "done" if name == "Done" else f"{name.lower()} [{getattr(event, 'code', '')}]"
    except TimeoutError:
        return f"still {client.status(job_id)['state']} after {seconds:g} s"
    return "no end"


def attack_queue(pairs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        proc, address = start_server(store)
        sock = dealer(address)
        try:
            base = rss_mb(proc.pid)
            accepted = refused = 0
            deadline = time.monotonic() + 60
            started = time.perf_counter()
            for _ in range(pairs):
                if time.monotonic() > deadline:
                    break
                reply = request(sock, "submit", payload=spec(steps=1000))
                if reply is None or reply.type != "accepted":
                    refused += 1
                    continue
                accepted += 1
                request(sock, "cancel", job_id=reply.job_id)
            took = time.perf_counter() - started
            time.sleep(2.0)  # a retention pass
            folders = sum(1 for p in store.iterdir() if p.is_dir())
            print(
                f"queue    {accepted + refused} submit-then-cancel in {took:.1f} s: {accepted} accepted, {refused} "
                f"refused; {folders} job folders kept; server RSS +{rss_mb(proc.pid) - base:.0f} MB"
            )
            before_bytes, base = _du(store), rss_mb(proc.pid)
            big = spec(steps=1).to_dict()
            big["negative_prompt"] = "x" * 900_000
            taken = 0
            for _ in range(100):
                reply = request(sock, "raw_submit", payload=big)
                taken += reply is not None and reply.type == "accepted"
            print(
                f"strings  100 specs with a 900 KB negative_prompt: {taken} accepted; store +"
                f"{(_du(store) - before_bytes) / 1e6:.1f} MB, server RSS +{rss_mb(proc.pid) - base:.0f} MB"
            )
        finally:
            sock.close(0)
            stop_server(proc)


def attack_retention(pairs: int = 300, keep: int = 100) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        try:
            proc, address = start_server(store, "--keep-jobs", str(keep))
        except RuntimeError:
            print("retain   this server has no --keep-jobs: every finished job is kept for ever")
            return
        sock = dealer(address)
        try:
            for _ in range(pairs):
                reply = request(sock, "submit", payload=spec(steps=1000))
                if reply is not None and reply.type == "accepted":
                    request(sock, "cancel", job_id=reply.job_id)
            time.sleep(2.0)  # a retention pass
            folders = sum(1 for p in store.iterdir() if p.is_dir())
            print(f"retain   {pairs} submit-then-cancel with --keep-jobs {keep}: {folders} job folders kept")
        finally:
            sock.close(0)
            stop_server(proc)


def _du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--fetches", type=int, default=120)
    parser.add_argument("--pairs", type=int, default=2000)
    args = parser.parse_args(argv)
    import dreamstill.backend.server as server_package

    print(f"server code: {Path(server_package.__file__).parent}; load average {os.getloadavg()[0]:.1f}")
    print(json.dumps({"frames": args.frames, "fetches": args.fetches, "pairs": args.pairs}))
    attack_frames(args.frames)
    attack_never_reads(args.fetches)
    attack_full_disk()
    attack_queue(args.pairs)
    attack_retention()
    return 0


if __name__ == "__main__":
    sys.exit(main())
