"""`dreamstill serve | keys | submit` against a server running the fake engine."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys

import pytest

from dreamstill.backend.server.commands import register, serve_config
from dreamstill.backend.server.testing import FAKE_JOB_FLAGS, FAKE_RUNNER, result_bytes

RUNNER, FAKE = FAKE_RUNNER, FAKE_JOB_FLAGS


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="dreamstill")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def server(fake_server):
    return fake_server


def test_submit_writes_the_result(server, tmp_path, capsys):
    out = tmp_path / "cube.glb"
    assert run_cli("submit", "a red cube", "--server", server.address, "-o", out, "--seed", "3", *FAKE) == 0
    assert out.read_bytes() == result_bytes(3, 1000)
    assert str(out) in capsys.readouterr().out


def test_submit_errors_have_exit_codes(server, tmp_path, capsys):
    assert (
        run_cli("submit", "a cube", "--server", server.address, "-o", tmp_path / "x.glb", "--steps", "0", "--quiet")
        == 2
    )
    assert "steps" in capsys.readouterr().err
    assert (
        run_cli(
            "submit",
            "a cube",
            "--server",
            server.address,
            "-o",
            tmp_path / "x.glb",
            "--steps",
            "3",
            "--option",
            "fake_crash_at=1",
            "--quiet",
        )
        == 1
    )
    assert "fake crash" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert (
        run_cli(
            "submit",
            "a cube",
            "--server",
            f"tcp://127.0.0.1:{port}",
            "--timeout",
            "0.5",
            "-o",
            tmp_path / "x.glb",
            "--quiet",
        )
        == 3
    )
    assert "dreamstill serve" in capsys.readouterr().err


def test_keys_command(tmp_path, capsys):
    assert run_cli("keys", "-o", tmp_path / "k") == 0
    for name in (
        "server.public",
        "server.secret",
        "client.public",
        "client.secret",
        "authorized_clients/client.public",
    ):
        assert len((tmp_path / "k" / name).read_text().strip()) == 40
    assert (tmp_path / "k" / "server.secret").stat().st_mode & 0o077 == 0
    assert run_cli("keys", "-o", tmp_path / "k") == 2  # never silently replaces keys
    assert "exists" in capsys.readouterr().err


def test_serve_refuses_an_open_bind_without_keys(tmp_path, capsys):
    assert run_cli("serve", "--bind", "tcp://0.0.0.0:5599", "--store", tmp_path) == 2
    assert "dreamstill keys" in capsys.readouterr().err


def test_serve_process_end_to_end_and_sigterm(tmp_path):
    """`serve` as its own process: a CLI submit against it, then SIGTERM stops it cleanly."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    code = "import sys; from dreamstill.backend.server.commands import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--bind", address, "--store", str(tmp_path / "s"), "--runner", RUNNER],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out = tmp_path / "a.ply"
        assert run_cli("submit", "a cube", "--server", address, "-o", out, "--timeout", "60", *FAKE) == 0
        assert out.read_bytes() == result_bytes(0, 1000)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log = proc.stdout.read()
        assert "listening on " + address in log and " done" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def serve_args(*argv):
    parser = argparse.ArgumentParser(prog="dreamstill")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *map(str, argv)])


def test_serve_flags_make_the_config_and_the_offer(tmp_path):
    (tmp_path / "sd").mkdir()
    (tmp_path / "models" / "generators").mkdir(parents=True)
    (tmp_path / "models" / "generators" / "g.pt").write_bytes(b"")
    config, catalog = serve_config(
        serve_args(
            "--workers",
            2,
            "--prior",
            f"sd={tmp_path / 'sd'}",
            "--models",
            tmp_path / "models",
            "--shared",
            "--keep-jobs",
            5,
            "--keep-days",
            1.5,
        )  # fmt: skip
    )
    assert config.devices == ("cpu", "cpu") and config.shared and (config.keep_jobs, config.keep_days) == (5, 1.5)
    assert catalog.resolve_prior("sd") == str((tmp_path / "sd").resolve()) and "g" in catalog.offers()["generators"]
    assert serve_config(serve_args("--devices", "cuda:0, cuda:1"))[0].devices == ("cuda:0", "cuda:1")
    assert serve_config(serve_args("--models", tmp_path / "models"))[0].devices == ("auto",)


@pytest.mark.parametrize(
    "argv, text",
    [
        (["--devices", "gpu0"], "--devices"),
        (["--workers", "0"], "--workers"),
        (["--keep-jobs", "-1"], "--keep-jobs"),
        (["--prior", "sd"], "NAME=PATH"),
        (["--prior", "sd=/no/such/folder"], "does not exist"),
        (["--models", "/no/such/folder"], "--models"),
    ],
)
def test_bad_serve_flags_are_refused_by_name(tmp_path, capsys, argv, text):
    assert run_cli("serve", "--bind", "tcp://127.0.0.1:*", "--store", tmp_path, *argv) == 2
    assert text in capsys.readouterr().err
