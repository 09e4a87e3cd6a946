"""CURVE keys for a server that listens beyond loopback (the loopback rule itself is protocol.addresses).

ZeroMQ CURVE (CurveZMQ: Curve25519 key exchange, then authenticated encryption of every frame) needs a server
keypair, known to clients by its public half, and a keypair per client; the server accepts only clients whose
public key sits in ``authorized_clients/``. Keys are 40-character Z85 text files made with ``zmq.curve_keypair``.

``dreamstill keys -o DIR`` writes::

    DIR/server.public                   give to every client (the add-on's "server key" field)
    DIR/server.secret                   stays on the server machine
    DIR/client.public, client.secret    one client identity, for the add-on / `dreamstill submit --keys DIR`
    DIR/authorized_clients/client.public  the clients the server lets in (add more *.public files here)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from dreamstill.protocol.addresses import is_loopback  # noqa: F401 - the one loopback rule, re-exported

_Z85_KEY = re.compile(rb"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


@dataclass
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: set[bytes] = field(default_factory=set)  # client public keys (Z85)


def _write(path: Path, text: bytes, secret: bool) -> None:
    path.write_bytes(text + b"\n")
    if secret:
        os.chmod(path, 0o600)


def read_key(path: Path | str) -> bytes:
    """One Z85 key from a text file, checked, as bytes (what zmq's curve options take)."""
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except OSError as err:
        raise ValueError(f"cannot read CURVE key {path}: {err}; make keys with `dreamstill keys -o DIR`") from None
    if not _Z85_KEY.match(key):
        raise ValueError(f"{path} is not a 40-character Z85 CURVE key; make keys with `dreamstill keys -o DIR`")
    return key


def make_keys(out_dir: Path | str, overwrite: bool = False) -> dict[str, Path]:
    """Write a server keypair and one authorized client keypair into ``out_dir``; return the files written."""
    import zmq

    out_dir = Path(out_dir)
    if (out_dir / "server.secret").exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir / 'server.secret'} exists; pick another folder or pass overwrite (the old "
            "keys would stop working for every client)"
        )
    (out_dir / "authorized_clients").mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    files = {
        "server.public": (server_public, False),
        "server.secret": (server_secret, True),
        "client.public": (client_public, False),
        "client.secret": (client_secret, True),
        "authorized_clients/client.public": (client_public, False),
    }
    written = {}
    for name, (key, secret) in files.items():
        _write(out_dir / name, key, secret)
        written[name] = out_dir / name
    return written


def load_server_keys(keys_dir: Path | str) -> ServerKeys:
    """The server keypair and the authorized client keys from a folder made by ``make_keys``."""
    keys_dir = Path(keys_dir)
    keys = ServerKeys(public=read_key(keys_dir / "server.public"), secret=read_key(keys_dir / "server.secret"))
    authorized = keys_dir / "authorized_clients"
    if authorized.is_dir():
        keys.authorized = {read_key(p) for p in sorted(authorized.glob("*.public"))}
    if not keys.authorized:
        raise ValueError(
            f"no client keys in {authorized}; copy each client's client.public there (or run "
            "`dreamstill keys -o DIR` again)"
        )
    return keys
