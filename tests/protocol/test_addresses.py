"""One address policy: the default address, and a strict is_loopback (host names are never local)."""

from __future__ import annotations

import pytest

from dreamstill.protocol import DEFAULT_ADDRESS, is_loopback


@pytest.mark.parametrize(
    "address",
    [
        DEFAULT_ADDRESS,
        "tcp://127.0.0.1:5555",
        "tcp://127.255.10.3:1",
        "tcp://localhost:5555",
        "tcp://LOCALHOST:5555",
        "tcp://localhost:*",
        "tcp://[::1]:5555",
        "tcp://[::ffff:127.0.0.1]:5555",
        "ipc:///tmp/dreamstill.sock",
        "inproc://jobs",
    ],
)
def test_local_addresses(address):
    assert is_loopback(address)


@pytest.mark.parametrize(
    "address",
    [
        "tcp://127.example.com:5555",  # a host name that merely starts like a loopback address
        "tcp://127.0.0.1.nip.io:5555",
        "tcp://localhost.evil.org:5555",
        "tcp://127.1:5555",  # not an IP literal Python accepts: resolved by name, so not trusted
        "tcp://0.0.0.0:5555",
        "tcp://*:5555",
        "tcp://192.168.1.5:5555",
        "tcp://[fe80::1]:5555",
        "tcp://eth0:5555",
        "tcp://lo:5555",
        "tcp://127.0.0.1;192.168.1.5:5555",  # ZeroMQ's source;destination form
        "tcp://127.0.0.1",  # no port
        "tcp://127.0.0.1:5555/x",
        "udp://127.0.0.1:5555",
        "",
        None,
    ],
)
def test_everything_else_is_not_local(address):
    assert not is_loopback(address)
