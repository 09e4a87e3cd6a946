"""The listening side under load: file-descriptor limit, and what to do when accepting a connection fails.

With a low descriptor limit, accept() fails with EMFILE while the connection stays in the kernel's backlog; libzmq
then retries at once, for ever, and an idle server spins on a CPU. So the server raises its soft limit to the hard
one at start, and when libzmq reports a failed accept for want of descriptors it stops listening for a moment
(unbind, rebind ``pause_s`` later). libzmq closes the connections accepted on that endpoint with it: every
descriptor comes back, and dreamstill clients reconnect by themselves with the same routing id (their jobs and
subscriptions are kept by the server).
"""

from __future__ import annotations

import errno
import logging
import time

log = logging.getLogger("dreamstill.server")

_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (capped at 1M); (old soft, new soft). No-op off POSIX."""
    try:
        import resource
    except ImportError:
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return soft, target
        except (ValueError, OSError) as err:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, err)
    return soft, soft


class AcceptGuard:
    """Watches the ROUTER's failed accepts and pauses listening instead of letting libzmq spin."""

    def __init__(self, sock, address: str, pause_s: float):
        import zmq

        self.sock, self.address, self.pause_s = sock, address, pause_s
        self.monitor = sock.get_monitor_socket(zmq.EVENT_ACCEPT_FAILED)
        self.paused_until: float | None = None
        self.pauses = 0

    @property
    def listening(self) -> bool:
        return self.paused_until is None

    def check(self) -> None:
        """Read the monitor; pause or resume listening as needed (call every loop turn)."""
        import zmq
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except (zmq.Again, zmq.ZMQError):
                break
            if event["event"] == zmq.EVENT_ACCEPT_FAILED and event["value"] in _OUT_OF_DESCRIPTORS:
                self._pause(event["value"])
        if self.paused_until is not None and time.monotonic() >= self.paused_until:
            self._resume()

    def _pause(self, code: int) -> None:
        import zmq

        if self.paused_until is not None:
            return
        try:
            self.sock.unbind(self.address)
        except zmq.ZMQError:
            return
        self.paused_until = time.monotonic() + self.pause_s
        self.pauses += 1
        log.warning(
            "accepting a connection failed (%s): not listening for %.1fs; raise the open-file limit (ulimit -n)",
            errno.errorcode.get(code, code),
            self.pause_s,
        )

    def _resume(self) -> None:
        import zmq

        try:
            self.sock.bind(self.address)
        except zmq.ZMQError as err:
            log.warning("cannot listen on %s again yet: %s", self.address, err)
            self.paused_until = time.monotonic() + self.pause_s
            return
        self.paused_until = None
        log.info("listening on %s again", self.address)

    def close(self) -> None:
        import zmq

        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)


__all__ = ["AcceptGuard", "raise_fd_limit"]
