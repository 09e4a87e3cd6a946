"""The ZeroMQ server: job queue, GPU worker process, job store, CURVE keys, and the headless CLI commands."""

from .keys import ServerKeys, is_loopback, load_server_keys, make_keys
from .server import DEFAULT_BIND, Server, ServerConfig, default_store_dir
from .store import JobStore
from .worker import DEFAULT_RUNNER

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_RUNNER",
    "JobStore",
    "Server",
    "ServerConfig",
    "ServerKeys",
    "default_store_dir",
    "is_loopback",
    "load_server_keys",
    "make_keys",
]
