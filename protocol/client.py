"""The Dreamstill client: a DEALER socket that submits jobs, streams their events, cancels and fetches results.

Single-threaded by design (a ZeroMQ socket belongs to one thread): Blender calls ``poll()`` from a main-thread
timer, scripts iterate ``events(job_id)``. Both pump the same inbox, where only the newest progress, preview and
mesh of each job are kept (older ones that nobody read yet are dropped): a viewer wants the latest state, and a
slow reader can never build up an unbounded queue. ``done`` / ``failed`` / ``cancelled`` are never dropped and
always come last for their job.

Liveness: when the server has been silent for ``heartbeat_s`` the client sends a ping; when a ping or a request
gets no answer within ``timeout_s`` it raises ``ServerUnavailable``, naming the address and how to start a server.
The socket's routing id is fixed per Client, so a TCP reconnect keeps the server's subscriptions; after a server
*restart* (a new ``server_id`` in its pong) the client re-attaches to every job it follows.

Ownership: a server without CURVE tells its clients apart by the owner tag inside their routing id, derived from a
secret that every Client of one user shares (``$DREAMSTILL_HOME/client.id``, made on first use, readable by that
user only). So the add-on, ``dreamstill submit`` and a resumed ``dreamstill batch`` of one user see each other's
jobs, and other users' clients see none of them (with CURVE the server uses the client's public key instead).

Pure Python + numpy + pyzmq: Blender imports this.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import zmq

from .addresses import DEFAULT_ADDRESS
from .events import Cancelled, Done, Failed, JobEvent
from .input_mesh import InputMesh
from .jobspec import JobSpec, JobSpecError
from .messages import EVENTS, REPLIES, Message, decode, encode
from .newest import NewestEvents
from .wire import MAX_MESSAGE_BYTES, ProtocolError

_ADDRESS = re.compile(r"^(tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}|ipc://.+|inproc://.+)$")


class ServerUnavailable(ConnectionError):
    """No answer from the server in time (not running, unreachable, or refused our keys)."""


class ServerError(RuntimeError):
    """The server answered a request with an error; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message


def load_client_keys(keys_dir: Path | str) -> dict:
    """Keyword arguments for Client from a folder made by ``dreamstill keys -o DIR``:
    ``Client(address, **load_client_keys(DIR))``."""
    keys_dir = Path(keys_dir)

    def read(name):
        path = keys_dir / name
        try:
            key = path.read_bytes().strip()
        except OSError as err:
            raise ValueError(f"cannot read {path}: {err}; copy the keys made by `dreamstill keys -o DIR`") from None
        if len(key) != 40:
            raise ValueError(f"{path} is not a 40-character Z85 CURVE key")
        return key

    return {"server_public_key": read("server.public"), "client_keys": (read("client.public"), read("client.secret"))}


def client_secret(home: Path | str | None = None) -> bytes:
    """This user's client secret (32 random bytes in ``$DREAMSTILL_HOME/client.id``, mode 0600, made on first use).

    Where the file cannot be read or written, a fresh secret for this process only (its jobs are then its own)."""
    folder = Path(home if home is not None else os.environ.get("DREAMSTILL_HOME", "~/.dreamstill")).expanduser()
    path = folder / "client.id"
    try:
        data = bytes.fromhex(path.read_text().strip())
        if len(data) >= 16:
            return data
    except (OSError, ValueError):
        pass
    secret = secrets.token_bytes(32)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".client.id.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex() + "\n")
        os.replace(tmp, path)  # two first uses at once: the last one wins, and both read it back below
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return secret


def routing_id(secret: bytes) -> bytes:
    """``b"ds"`` + an 8-byte owner tag (SHA-256 of the secret) + 6 random bytes: one owner, a routing id per Client."""
    return b"ds" + hashlib.sha256(b"dreamstill-owner:" + secret).digest()[:8] + secrets.token_bytes(6)


def check_address(address: str) -> str:
    """The address unchanged, or ValueError with an example of what it should look like."""
    if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
        raise ValueError(
            f"server address {address!r} must look like tcp://HOST:PORT, e.g. {DEFAULT_ADDRESS} "
            "(or ipc:///path/to/socket)"
        )
    return address.strip()


class Client:
    """``Client(address, server_public_key=None, client_keys=None, timeout_s=10)``; close() when done."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        server_public_key: bytes | str | None = None,
        client_keys: tuple | None = None,
        timeout_s: float = 10.0,
        *,
        heartbeat_s: float = 2.0,
        context: zmq.Context | None = None,
        owner_secret: bytes | None = None,
    ):
        self.address = check_address(address)
        self.timeout_s = float(timeout_s)
        self.heartbeat_s = float(heartbeat_s)
        self._ctx = context or zmq.Context.instance()
        self._routing_id = routing_id(owner_secret if owner_secret is not None else client_secret())
        self.curve = server_public_key is not None
        if self.curve:
            public, secret = client_keys if client_keys is not None else zmq.curve_keypair()
            self._curve = (_key(server_public_key), _key(public), _key(secret))
        self._handshake_problem: str | None = None
        self._open_socket()
        self._rids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        self._inbox: dict[str, NewestEvents] = {}  # per job, under the one newest-event policy
        self._stray_error: tuple[float, str, str] | None = None  # (when, code, message): an error with no rid
        self._chunk_token: str | None = None  # echoed in the next fetch_result (the server paces chunks by it)
        self._following: set[str] = set()  # jobs this client watches that have not ended
        self._ended: dict[str, JobEvent] = {}  # job id -> its terminal event
        self._last_heard = time.monotonic()
        self._ping_since: float | None = None  # when the unanswered heartbeat ping was first tried
        self._last_ping = 0.0
        self.server_id: str | None = None
        self.server_info: dict = {}
        self.errors: deque = deque(maxlen=100)  # errors from the server that answered no request of ours
        self.closed = False

    # ------------------------------------------------------------------ plumbing
    def _open_socket(self) -> None:
        """A DEALER with this client's fixed routing id (so the server's subscriptions survive a reconnect)."""
        sock = self._sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 500)  # a last cancel still leaves; close never hangs for long
        sock.setsockopt(zmq.ROUTING_ID, self._routing_id)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.RCVHWM, 64)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if self.curve:
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = self._curve
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        sock.connect(self.address)

    def _close_socket(self, linger: int | None = None) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(0)
        self._sock.close(linger)

    def _reset(self) -> None:
        """After a timeout: drop whatever requests still wait to be sent (a submit must not reach a server that
        comes back later, after the caller was told it failed) and connect afresh."""
        self._close_socket(linger=0)
        self._open_socket()
        self._ping_since, self._last_heard = None, time.monotonic()

    def _unavailable(self, what: str) -> ServerUnavailable:
        self._read_monitor()
        text = (
            f"no answer from the Dreamstill server at {self.address} {what} (waited {self.timeout_s:g}s); "
            "is `dreamstill serve` running there?"
        )
        if self._handshake_problem:
            text += f" The connection was refused: {self._handshake_problem}."
        self._reset()
        return ServerUnavailable(text)

    def _read_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshake_problem = None
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._handshake_problem = (
                    "the server does not know this client's CURVE key; add its client.public to "
                    "the server's authorized_clients/ or use the keys `dreamstill keys` made"
                )
            else:
                self._handshake_problem = (
                    "the security handshake failed; check the server public key, and that "
                    "client and server both use CURVE keys (or both do not)"
                )

    def _send(self, frames: list, what: str) -> None:
        """Send; waits (up to timeout_s) only when the outgoing queue is full."""
        if self.closed:
            raise RuntimeError("this Client is closed; make a new one")
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return
            except zmq.Again:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._unavailable(what) from None
                self._sock.poll(min(left, 0.1) * 1000, zmq.POLLOUT)
                self._receive(0)

    def _receive(self, wait_s: float) -> bool:
        """Wait up to wait_s for traffic, then take everything that is there; True if anything came."""
        if not self._sock.poll(max(0.0, wait_s) * 1000, zmq.POLLIN):
            return False
        for _ in range(10_000):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._last_heard = time.monotonic()
            self._ping_since = None
            self._dispatch(frames)
        return True

    def _dispatch(self, frames) -> None:
        try:
            msg = decode(frames, expect=REPLIES + EVENTS)
        except ProtocolError as err:
            if err.code == "unsupported_version":
                raise
            self.errors.append(("protocol", err.code, err.message))
            return
        except Exception as err:  # whatever a broken or hostile server sends, poll() must not raise on it
            self.errors.append(("protocol", "malformed", f"{err.__class__.__name__}: {str(err)[:200]}"))
            return
        if msg.type in EVENTS:
            self._deliver(msg.job_id, msg.type, msg.payload)
        elif msg.type == "pong":
            self.server_info = dict(msg.payload)
            server_id = msg.payload.get("server_id")
            if self.server_id is not None and server_id != self.server_id:
                self._reattach_all()
            self.server_id = server_id
            if msg.rid and not msg.rid.startswith("hb"):
                self._replies[msg.rid] = msg
        elif msg.rid is not None:
            self._replies[msg.rid] = msg
            if len(self._replies) > 1000:  # replies nobody waits for any more (timed-out requests)
                for rid in list(self._replies)[:500]:
                    del self._replies[rid]
        elif msg.type == "error":
            self.errors.append((msg.job_id, msg.payload["code"], msg.payload["message"]))
            if msg.job_id is None:  # an answer to a request whose id the server could not read
                self._stray_error = (time.monotonic(), msg.payload["code"], msg.payload["message"])

    def _deliver(self, job_id: str, kind: str, event) -> None:
        if job_id in self._ended:
            return  # a late event after the end (e.g. re-sent on attach)
        box = self._inbox.setdefault(job_id, NewestEvents())
        box.put(kind, event)
        if box.ended:
            self._ended[job_id] = event
            self._following.discard(job_id)

    def _reattach_all(self) -> None:
        for job_id in list(self._following):
            try:
                self._send(encode(Message("attach", job_id=job_id, rid=f"hb-attach-{next(self._rids)}")), "to attach")
            except ServerUnavailable:
                return

    def _heartbeat(self) -> None:
        """Ping a silent server; raise ServerUnavailable when it stays silent for timeout_s after the first ping."""
        now = time.monotonic()
        if now - self._last_heard < self.heartbeat_s:
            return
        if self._ping_since is None:
            self._ping_since = now
        elif now - self._ping_since > self.timeout_s:
            raise self._unavailable("to heartbeat pings")  # resets: the next call starts a fresh round
        if now - self._last_ping >= min(1.0, self.heartbeat_s):
            self._last_ping = now
            try:
                self._sock.send_multipart(encode(Message("ping", rid=f"hb{next(self._rids)}")), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass  # outgoing queue full: keep trying until the deadline above

    def _request(self, kind: str, *, job_id: str | None = None, payload=None, what: str = "") -> Message:
        """Send a request (``payload`` may be a ready Message, e.g. a submit with its mesh) and wait for its reply."""
        rid = str(next(self._rids))
        if isinstance(payload, Message):
            message = dataclasses.replace(payload, rid=rid)
        else:
            message = Message(kind, job_id=job_id, payload=payload, rid=rid)
        frames = encode(message)  # a broken limit is raised here, before anything is sent
        sent = time.monotonic()
        self._send(frames, what or f"to {kind}")
        deadline = sent + self.timeout_s
        while rid not in self._replies:
            stray = self._stray_error
            if stray is not None and stray[0] >= sent:  # the server refused our request without reading its id
                self._stray_error = None
                raise ServerError(stray[1], stray[2])
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._unavailable(what or f"to {kind}")
            self._receive(left)
        reply = self._replies.pop(rid)
        if reply.type == "error":
            code, text = reply.payload["code"], reply.payload["message"]
            if code == "bad_spec":
                raise JobSpecError(text)
            if code == "unsupported_version":
                raise ProtocolError(code, text)
            raise ServerError(code, text)
        return reply

    # ------------------------------------------------------------------ API
    def ping(self) -> float:
        """Round-trip time in seconds; ``server_info`` holds the server's answer (queue length, worker)."""
        started = time.perf_counter()
        self._request("ping", what="to a ping")
        return time.perf_counter() - started

    def submit(self, spec: JobSpec, mesh: InputMesh | None = None) -> str:
        """Queue a job; returns its id. A JobSpec is checked as it is made (JobSpecError names the field); the
        server refuses priors and generators it does not offer (JobSpecError too).

        ``mesh``: the mesh a texture or refine job works on (an InputMesh, or a dict with ``vertices`` (N, 3),
        ``faces`` (M, 3) and optionally per-corner ``uvs`` (M, 3, 2)). It travels as array frames of the submit;
        one that would make the request longer than a server accepts is refused here, before anything is sent
        (ProtocolError ``too_large`` with the triangle count that fits). JobSpecError when the mode and the mesh do
        not go together (texture/refine without one, another mode with one)."""
        if mesh is not None and not isinstance(mesh, InputMesh):
            mesh = InputMesh.from_arrays(dict(mesh))
        message = Message("submit", payload=spec, mesh=mesh)
        reply = self._request("submit", payload=message, what="to a submitted job")
        self._following.add(reply.job_id)
        return reply.job_id

    def attach(self, job_id: str) -> dict:
        """Follow a job by id (after a reconnect, or from another client); the server re-sends its newest state
        and, if it has ended, its done / failed / cancelled. Returns its status."""
        self._ended.pop(job_id, None)
        self._inbox.pop(job_id, None)
        reply = self._request("attach", job_id=job_id)
        status = reply.payload["status"]
        self._following.add(job_id)
        return status

    def events(self, job_id: str, timeout_s: float | None = None) -> Iterator[JobEvent]:
        """Yield the job's events until (and including) Done, Failed or Cancelled; blocking (for scripts).

        Attaches first when this client neither submitted nor attached to the job. ``timeout_s`` bounds the whole
        wait (TimeoutError); a silent server raises ServerUnavailable after ``self.timeout_s``.
        """
        if job_id not in self._following and job_id not in self._ended and job_id not in self._inbox:
            self.attach(job_id)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            box = self._inbox.pop(job_id, None)
            for event in box.take() if box is not None else ():
                yield event
                if isinstance(event, (Done, Failed, Cancelled)):
                    return
            if job_id in self._ended:  # the end was taken by poll() before: give it again
                yield self._ended[job_id]
                return
            wait = self.heartbeat_s
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(
                        f"job {job_id} did not finish within {timeout_s:g}s (it keeps running; cancel it or wait again)"
                    )
            self._receive(wait)
            self._heartbeat()

    def poll(self) -> list[tuple[str, JobEvent]]:
        """Everything that arrived, without blocking: [(job_id, event)], only the newest progress / preview / mesh
        per job. For a GUI timer; raises ServerUnavailable when the server stopped answering heartbeats."""
        self._receive(0)
        self._heartbeat()
        out = [(job_id, event) for job_id, box in self._inbox.items() for event in box.take()]
        self._inbox.clear()
        return out

    def pump(self, seconds: float) -> list[tuple[str, JobEvent]]:
        """Like poll() but waits up to ``seconds`` for the first message (for scripts and `blender -b`)."""
        self._receive(seconds)
        return self.poll()

    def cancel(self, job_id: str) -> dict:
        """Ask the server to stop the job (within one step); harmless when repeated or after it ended."""
        return self._request("cancel", job_id=job_id).payload["status"]

    def status(self, job_id: str) -> dict:
        return self._request("status", job_id=job_id).payload["status"]

    def list_jobs(self, limit: int = 100) -> list[dict]:
        """This client's jobs on the server (every job on a ``--shared`` server), newest first:
        [{job_id, state, prompt, step, ...}]. Fetched page by page, so a long list never makes one huge reply."""
        jobs: list[dict] = []
        before = None
        while len(jobs) < limit:
            payload = {"limit": int(limit) - len(jobs), **({"before": before} if before else {})}
            page = self._request("list_jobs", payload=payload).payload
            jobs.extend(page["jobs"])
            before = page.get("next")
            if not before or not page["jobs"]:
                break
        return jobs[:limit]

    def fetch_result(self, job_id: str, out_dir: Path | str) -> list[Path]:
        """Download a finished job's result files into ``out_dir`` (checked by size and SHA-256); their paths."""
        out_dir = Path(out_dir)
        files = self._request("fetch_result", job_id=job_id).payload["files"]
        paths = []
        for info in files:
            name = str(info.get("name", ""))
            target = (out_dir / name).resolve()
            if not name or name.startswith("/") or ".." in Path(name).parts or out_dir.resolve() not in target.parents:
                raise ProtocolError(
                    "bad_field",
                    f"the server offered a result file named {name!r}, which would land outside {out_dir}; refusing it",
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            digest, offset = hashlib.sha256(), 0
            with open(partial, "wb") as f:
                while True:
                    ask = {
                        "name": name,
                        "offset": offset,
                        **({"token": self._chunk_token} if self._chunk_token else {}),
                    }
                    chunk = self._request("fetch_result", job_id=job_id, payload=ask).payload
                    self._chunk_token = chunk.get("token")
                    data = chunk["data"]
                    f.write(data.data)
                    digest.update(data.data)
                    offset += len(data)
                    if chunk["eof"] or len(data) == 0:
                        break
            if offset != info.get("size", offset) or digest.hexdigest() != info.get("sha256", digest.hexdigest()):
                partial.unlink(missing_ok=True)
                raise ServerError(
                    "corrupt_transfer",
                    f"{name} arrived damaged ({offset} bytes, expected {info.get('size')}); fetch it again",
                )
            os.replace(partial, target)
            paths.append(target)
        return paths

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._close_socket()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _key(value) -> bytes:
    return value.encode("ascii") if isinstance(value, str) else bytes(value)
