"""Request handlers: one method per request type, each answering with a reply that carries the request's rid.

Ownership: a job belongs to the owner that submitted it (intake.owner_of); another owner gets ``unknown_job`` for
it (not even its existence leaks) and sees only its own jobs in ``list_jobs``, unless the server runs with
``--shared``. Quotas per owner: queued jobs (``max_queued_per_client``) and submits a minute.
"""

from __future__ import annotations

import logging

from dreamstill.protocol import Cancelled, Done, Failed, JobSpec
from dreamstill.protocol.messages import Message, encode

from .intake import Request
from .jobs import LiveJob
from .models import ModelRefused
from .store import StoreWriteError

log = logging.getLogger("dreamstill.server")


class Handlers:
    def __init__(self, server):
        self.s = server

    # ------------------------------------------------------------------ plumbing
    def reply(self, req: Request, kind: str, *, rid=None, job_id=None, payload=None) -> None:
        self.s.fanout.reply(req.ident, encode(Message(kind, job_id=job_id, rid=rid, payload=payload)))

    def error(self, req: Request, code: str, message: str, rid: str | None, job_id: str | None = None) -> None:
        payload = {"code": code, "message": self.s.redact(message)[:4000]}
        self.reply(req, "error", rid=rid, job_id=job_id, payload=payload)

    def visible(self, job: LiveJob, owner: str) -> bool:
        return self.s.config.shared or job.owner == owner

    def handle(self, req: Request, msg: Message) -> None:
        kind = msg.type
        if kind == "ping":
            self.reply(req, "pong", rid=msg.rid, payload=self.s.ping_payload())
        elif kind == "submit":
            self.submit(req, msg)
        elif kind == "list_jobs":
            self.list_jobs(req, msg)
        else:
            job = self.s.jobs.get(msg.job_id)
            if job is None or not self.visible(job, req.owner):
                self.error(req, "unknown_job", f"no job {msg.job_id!r} of yours on this server; list_jobs shows yours",
                           msg.rid, msg.job_id)  # fmt: skip
                return
            if kind == "fetch_result":
                self.fetch(req, job, msg)
                return
            if kind == "cancel":
                self.s.cancel(job)
            elif kind == "attach":
                self.s.subscribe(job, req.ident)
            self.reply(req, "job_status", rid=msg.rid, job_id=job.id, payload={"status": self.s.status(job)})

    # ------------------------------------------------------------------ submit
    def submit(self, req: Request, msg: Message) -> None:
        spec: JobSpec = msg.payload
        refusal = self._refuse_submit(req, spec)
        if refusal is not None:
            self.error(req, *refusal, msg.rid)
            return
        try:
            stored = self.s.store.create(spec, owner=req.owner, mesh=msg.mesh)
        except StoreWriteError as err:
            code = "disk_full" if err.disk_full else "store_error"
            self.error(req, code, f"the server cannot record the job ({err.strerror}); try again later", msg.rid)
            return
        except RecursionError:
            self.error(req, "bad_spec", "JobSpec.options: nested too deeply; keep options flat", msg.rid)
            return
        job = self.s.add_job(stored)
        job.subs[req.ident] = self.s.new_subscriber()
        position = len(self.s.queue) - 1 + sum(1 for j in self.s.jobs.values() if j.state == "running")
        self.reply(req, "accepted", rid=msg.rid, job_id=job.id, payload={"position": position})
        mesh = "" if msg.mesh is None else f" on a mesh of {msg.mesh.face_count} triangles"
        log.info("job %s queued (position %d): %r%s", job.id, position, spec.prompt[:80], mesh)
        self.s.dispatch()

    def _refuse_submit(self, req: Request, spec: JobSpec) -> tuple[str, str] | None:
        config = self.s.config
        if len(self.s.queue) >= config.max_queued:
            return "queue_full", f"{len(self.s.queue)} jobs are already queued; wait for some to finish or cancel them"
        mine = sum(1 for j in self.s.jobs.values() if j.unfinished and j.owner == req.owner)
        if mine >= config.max_queued_per_client:
            return "quota", f"you have {mine} unfinished jobs here (the limit per client); wait for some to finish"
        wait = self.s.submit_quota.take(req.owner)
        if wait is not None:
            return "quota", (
                f"more than {config.submits_per_minute_per_client} submits a minute from this client; "
                f"try again in {wait:.0f}s"
            )
        try:
            self.s.catalog.resolve(spec.to_dict())
        except ModelRefused as err:
            return "bad_spec", str(err)
        except RecursionError:
            return "bad_spec", "JobSpec.options: nested too deeply; keep options flat"
        if self.s.pool.all_broken is not None:
            self.s.pool.revive()  # no worker could start: give them another series of attempts
        return None

    # ------------------------------------------------------------------ list
    def list_jobs(self, req: Request, msg: Message) -> None:
        limit = max(1, min(int(msg.payload.get("limit") or 100), 1000))
        before = msg.payload.get("before")
        page, size, more = [], 0, None
        for job in reversed(list(self.s.jobs.values())):
            if (before is not None and job.id >= before) or not self.visible(job, req.owner):
                continue
            status = self.s.status(job)
            cost = len(repr(status)) + 16
            if len(page) >= limit or (page and size + cost > self.s.config.list_page_bytes):
                more = page[-1]["job_id"]
                break
            page.append(status)
            size += cost
        payload = {"jobs": page, **({"next": more} if more else {})}
        self.reply(req, "job_list", rid=msg.rid, payload=payload)

    # ------------------------------------------------------------------ fetch
    def fetch(self, req: Request, job: LiveJob, msg: Message) -> None:
        rid, terminal = msg.rid, job.stored.terminal
        if not isinstance(terminal, Done):
            if job.unfinished:
                text = f"job {job.id} is {job.state} (step {job.step}/{job.stored.spec.steps}); fetch it after its done"
                self.error(req, "not_finished", text, rid, job.id)
            else:
                reason = terminal.message if isinstance(terminal, Failed) else ""
                self.error(req, "no_result", f"job {job.id} ended {job.state} and has no result. {reason}", rid, job.id)
            return
        name = msg.payload.get("name")
        if name is None:
            files = self.s.store.result_files(job.id, terminal.files)
            self.reply(req, "result_files", rid=rid, job_id=job.id, payload={"files": files})
            return
        self._chunk(req, job, msg, name)

    def _chunk(self, req: Request, job: LiveJob, msg: Message, name: str) -> None:
        import numpy as np

        rid = msg.rid
        names = self.s.store.result_names(job.id, job.stored.terminal.files)
        if name not in names:
            self.error(req, "unknown_file", f"job {job.id} has no result file {name!r}; it has {names}", rid, job.id)
            return
        path = self.s.store.result_path(job.id, name)
        size = path.stat().st_size
        offset = msg.payload.get("offset") or 0
        if not 0 <= offset <= size:
            self.error(req, "bad_field", f"fetch_result: offset must lie in 0..{size} for {name!r}", rid, job.id)
            return
        length = min(self.s.config.chunk_bytes, size - offset)
        refusal = self.s.pacer.refuse(req.ident, msg.payload.get("token"), length)
        if refusal is not None:
            self.error(req, *refusal, rid, job.id)
            return
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        token = self.s.pacer.issue(req.ident, len(data))
        eof = offset + len(data) >= size
        payload = {"name": name, "offset": offset, "size": size, "eof": eof, "token": token}
        payload["data"] = np.frombuffer(data, dtype=np.uint8)
        self.reply(req, "file_chunk", rid=rid, job_id=job.id, payload=payload)


def status_of(job: LiveJob, store, queue_position: int | None) -> dict:
    """The status a client sees of one job (no file is read: result names come from the Done event)."""
    stored, spec = job.stored, job.stored.spec
    status = {
        "job_id": job.id,
        "state": stored.state,
        **spec.summary(),  # the spec's status fields, declared in JobSpec
        "created": stored.created,
        "started": stored.started,
        "finished": stored.finished,
        "cancel_requested": job.cancel_requested is not None,
    }
    if stored.state == "queued":
        status["position"] = queue_position
    progress = stored.last_progress
    if progress is not None:
        status.update(step=progress.step, total=progress.total, loss=progress.loss, eta_s=progress.eta_s)
        status["phase"] = getattr(progress, "phase", "optimize")  # step / total count this phase's units
    terminal = stored.terminal
    if isinstance(terminal, Failed):
        status.update(code=terminal.code, message=terminal.message)
    elif isinstance(terminal, Done):
        status.update(files=store.result_names(job.id, terminal.files), seconds=terminal.seconds)
    elif isinstance(terminal, Cancelled):
        status.update(step=terminal.step)
    return status


__all__ = ["Handlers", "status_of"]
