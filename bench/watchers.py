#!/usr/bin/env python3
"""Opens WATCHERS WatchChanges streams against a running grantd and reports its resident
memory (VmRSS of PID) and its own counts of open streams and connections, as JSON lines
on stdout. Run by bench/watchers.sh, which starts grantd and measures between phases;
loopback only.

    watchers.py setup     an organization, a member and COMMITS permissions; "before"
    watchers.py reading   WATCHERS streams: open and idle; after each read COMMITS changes
    watchers.py unread    WATCHERS streams whose client reads nothing: after 2 * COMMITS
                          changes (what the server holds for them); after the stall
                          timeout ended them
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import sys
import time
import urllib.request

import grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "clients" / "python" / "grantd_client" / "_gen"))
from grants.v1 import audit_service_pb2 as audit_pb  # noqa: E402
from grants.v1 import audit_service_pb2_grpc as audit_grpc  # noqa: E402
from grants.v1 import directory_service_pb2 as directory_pb  # noqa: E402
from grants.v1 import directory_service_pb2_grpc as directory_grpc  # noqa: E402
from grants.v1 import grant_service_pb2 as grant_pb  # noqa: E402
from grants.v1 import grant_service_pb2_grpc as grant_grpc  # noqa: E402

ADDR = os.environ["GRANTD_ADDR"]
PID = int(os.environ["GRANTD_PID"])
TOKEN = os.environ["GRANTD_TOKEN"]
METRICS = os.environ["GRANTD_METRICS"]
WATCHERS = int(os.environ.get("WATCHERS", "1000"))
COMMITS = int(os.environ.get("COMMITS", "1000"))
STALL_WAIT_S = float(os.environ.get("STALL_WAIT_S", "15"))
# HTTP/2 streams per connection stay under grantd's --max-concurrent-streams (256).
PER_CONNECTION = 200
METADATA = (("authorization", f"Bearer {TOKEN}"),)


def rss_kib() -> int:
    for line in pathlib.Path(f"/proc/{PID}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def gauge(name: str) -> float:
    with urllib.request.urlopen(f"http://{METRICS}/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"no {name}")


def report(step: str, **extra) -> None:
    # What the server counts: open streams, and open connections (the admin's included).
    served = {"streams_open": gauge("grantd_watchers"), "connections_open": gauge("grantd_connections")}
    print(json.dumps({"step": step, "rss_kib": rss_kib(), **served, **extra}), flush=True)


def channels(count: int, reading: bool) -> list[grpc.aio.Channel]:
    # A pool of its own per channel: one TCP connection each. A client that reads
    # nothing also keeps HTTP/2's window at its 64 KiB start (no BDP probing), so what
    # it does not read piles up at the server, as it would behind a slow network.
    options = [("grpc.use_local_subchannel_pool", 1)]
    if not reading:
        options.append(("grpc.http2.bdp_probe", 0))
    return [grpc.aio.insecure_channel(ADDR, options=options) for _ in range(count)]


async def setup(channel: grpc.aio.Channel) -> None:
    directory = directory_grpc.DirectoryServiceStub(channel)
    await directory.CreateOrganization(directory_pb.CreateOrganizationRequest(id="bench"), metadata=METADATA)
    await directory.AddUserToOrganization(
        directory_pb.AddUserToOrganizationRequest(organization_id="bench", user_id="alice"), metadata=METADATA
    )
    names = [f"bench:p{i:05}" for i in range(COMMITS)]
    for chunk in range(0, len(names), 50):
        await asyncio.gather(
            *(
                directory.CreatePermission(directory_pb.CreatePermissionRequest(name=name), metadata=METADATA)
                for name in names[chunk : chunk + 50]
            )
        )


async def latest(channel: grpc.aio.Channel) -> int:
    audit = audit_grpc.AuditServiceStub(channel)
    page = await audit.ListChanges(audit_pb.ListChangesRequest(page_size=1), metadata=METADATA)
    return page.latest_revision


async def grant(channel: grpc.aio.Channel, names: list[str], remove: bool = False) -> int:
    grants = grant_grpc.GrantServiceStub(channel)
    request = dict(organization_id="bench", user_id="alice", permission_names=names)
    if remove:
        answer = await grants.RemoveUserPermissions(grant_pb.RemoveUserPermissionsRequest(**request), metadata=METADATA)
    else:
        answer = await grants.AddUserPermissions(grant_pb.AddUserPermissionsRequest(**request), metadata=METADATA)
    return answer.revision


def open_streams(pool: list[grpc.aio.Channel], after: int):
    calls = []
    for i in range(WATCHERS):
        audit = audit_grpc.AuditServiceStub(pool[i // PER_CONNECTION])
        calls.append(audit.WatchChanges(audit_pb.WatchChangesRequest(after_revision=after), metadata=METADATA))
    return calls


async def wait_open(calls) -> None:
    # Initial metadata arrives once the server has opened the stream and replayed.
    await asyncio.gather(*(call.initial_metadata() for call in calls))


async def read_until(call, revision: int) -> None:
    async for response in call:
        if response.change.revision >= revision:
            return


async def reading(admin: grpc.aio.Channel, names: list[str]) -> None:
    pool = channels((WATCHERS + PER_CONNECTION - 1) // PER_CONNECTION, reading=True)
    calls = open_streams(pool, await latest(admin))
    await wait_open(calls)
    await asyncio.sleep(2)
    report("open, idle")
    started = time.monotonic()
    target = await grant(admin, names)
    await asyncio.gather(*(read_until(call, target) for call in calls))
    report(f"open, after each read {COMMITS} changes", seconds=round(time.monotonic() - started, 2))


async def unread(admin: grpc.aio.Channel, names: list[str]) -> None:
    pool = channels((WATCHERS + PER_CONNECTION - 1) // PER_CONNECTION, reading=False)
    calls = open_streams(pool, await latest(admin))
    await wait_open(calls)
    await grant(admin, names, remove=True)
    await grant(admin, names)
    await asyncio.sleep(2)
    report(f"open, reading nothing of {2 * COMMITS} changes")
    await asyncio.sleep(STALL_WAIT_S)
    report("after the stall timeout")


async def main(phase: str) -> None:
    admin = grpc.aio.insecure_channel(ADDR)
    if phase == "setup":
        await setup(admin)
        await asyncio.sleep(1)
        report("before")
    else:
        names = [f"bench:p{i:05}" for i in range(COMMITS)]
        await (reading if phase == "reading" else unread)(admin, names)
    # Leaving closes every connection: grpcio keeps those of cancelled streams open
    # until its process ends, so the steps after a phase are measured after it.


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
