"""A grantd of its own for each test, over SQLite and over PostgreSQL, and a headless
Chromium (CHROMIUM, default /usr/bin/chromium) that opens its console.

    GRANTD_BIN=target/debug/grantd console/.venv/bin/pytest console/tests

GRANTD_TEST_POSTGRES_URL names the PostgreSQL server (default
postgres://postgres@127.0.0.1:5432/postgres); each test gets a new database on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "clients" / "python"))

from grantd_client import GrantdClient  # noqa: E402

POSTGRES = os.environ.get("GRANTD_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
SECRET = b"console-tests-secret-of-at-least-32-bytes"


@dataclass
class Grantd:
    bin: str
    workdir: pathlib.Path
    addr: str
    backend: str

    def _key_flags(self) -> list[str]:
        return ["--jwt-hs256-secret-file", str(self.workdir / "secret")]

    def token(self, subject: str, *, admin: bool = False) -> str:
        args = [self.bin, "token", "--subject", subject, *self._key_flags()] + (["--admin"] if admin else [])
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    def console_link(self, subject: str, *, admin: bool = False) -> str:
        """What `grantd token --console` prints for this server."""
        args = [self.bin, "token", "--subject", subject, "--console", "--listen", self.addr, *self._key_flags()]
        args += ["--admin"] if admin else []
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    def expired_token(self, subject: str) -> str:
        """Signed with the server's key, expired an hour ago (beyond any clock-skew leeway)."""

        def part(data: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

        now = int(time.time())
        signed = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': subject, 'iat': now - 7200, 'exp': now - 3600})}"
        signature = hmac.new(SECRET, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    def client(self, subject: str = "root", *, admin: bool = True) -> GrantdClient:
        return GrantdClient(self.addr, token=self.token(subject, admin=admin))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _database(backend: str, workdir: pathlib.Path) -> tuple[str, str | None]:
    """The database URL for one test, and the PostgreSQL database to drop after it."""
    if backend == "sqlite":
        return f"sqlite://{workdir / 'grantd.db'}?mode=rwc", None
    name = f"grantd_console_{uuid.uuid4().hex[:12]}"
    server = POSTGRES.rsplit("/", 1)[0]
    subprocess.run(["psql", POSTGRES, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"{server}/{name}", name


@pytest.fixture(params=["sqlite", "postgres"])
def grantd(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Grantd]:
    binary = os.environ.get("GRANTD_BIN", str(REPO / "target" / "debug" / "grantd"))
    if not os.access(binary, os.X_OK):
        pytest.fail(f"grantd binary {binary} not found: build it with `cargo build` or set GRANTD_BIN")
    (tmp_path / "secret").write_bytes(SECRET)
    url, dropped = _database(request.param, tmp_path)
    addr = f"127.0.0.1:{_free_port()}"
    log = open(tmp_path / "grantd.log", "wb")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", addr, "--database-url", url, "--jwt-hs256-secret-file", str(tmp_path / "secret")],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([binary, "health", "--addr", addr], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"grantd did not start:\n{(tmp_path / 'grantd.log').read_text()}")
            time.sleep(0.1)
        yield Grantd(binary, tmp_path, addr, request.param)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if dropped:
            subprocess.run(["psql", POSTGRES, "-q", "-c", f"DROP DATABASE IF EXISTS {dropped}"], capture_output=True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # A phone-sized window: every flow must work at 375 px wide.
    context = browser.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()

