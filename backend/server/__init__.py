"""The ZeroMQ server: request handlers, fan-out, worker supervision, job store, CURVE keys, and the headless CLI
commands. ``Server`` (server.py) wires them together; each module's docstring says its one job."""

from .config import DEFAULT_BIND, ServerConfig, default_store_dir
from .keys import ServerKeys, is_loopback, load_server_keys, make_keys
from .models import ModelCatalog, ModelRefused
from .server import Server
from .store import JobStore
from .worker import DEFAULT_RUNNER

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_RUNNER",
    "JobStore",
    "ModelCatalog",
    "ModelRefused",
    "Server",
    "ServerConfig",
    "ServerKeys",
    "default_store_dir",
    "is_loopback",
    "load_server_keys",
    "make_keys",
]
