"""Starts a grantd of its own (GRANTD_BIN, default ../../target/debug/grantd) in a
temporary directory, over SQLite, on a free loopback port."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent))


@dataclass
class Grantd:
    bin: str
    workdir: pathlib.Path
    addr: str

    def token(self, subject: str, *, admin: bool = False) -> str:
        args = [self.bin, "token", "--subject", subject] + (["--admin"] if admin else [])
        return subprocess.run(args, cwd=self.workdir, check=True, capture_output=True, text=True).stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def grantd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grantd]:
    binary = os.environ.get("GRANTD_BIN", str(REPO / "target" / "debug" / "grantd"))
    if not os.access(binary, os.X_OK):
        pytest.fail(f"grantd binary {binary} not found: build it with `cargo build` or set GRANTD_BIN")
    workdir = tmp_path_factory.mktemp("grantd")
    addr = f"127.0.0.1:{_free_port()}"
    log = open(workdir / "grantd.log", "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", addr], cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"grantd exited with {proc.returncode}:\n{(workdir / 'grantd.log').read_text()}")
            with grpc.insecure_channel(addr) as ch:
                try:
                    grpc.channel_ready_future(ch).result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"grantd did not listen on {addr} within 60 s")
        yield Grantd(binary, workdir, addr)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
