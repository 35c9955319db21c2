#!/usr/bin/env python3
"""The whole flow against a running grantd: organization, permission, member, grant,
check, revoke, check, remove the user.

    export GRANTD_TOKEN=$(grantd token --subject root --admin)
    python example.py 127.0.0.1:50051
"""

from __future__ import annotations

import os
import sys
import uuid

from grantd_client import GrantdClient, Resource


def flow(gd: GrantdClient, org: str, user: str) -> list[bool]:
    """Runs the flow; answers `allowed` as seen after the grant and after the revoke."""
    gd.create_organization(org, "Example Inc.")
    gd.create_permission(f"{org}.documents:read", "Read documents")
    gd.add_member(org, user)
    folder = Resource(type="folder", id="f1")
    granted = gd.grant(org, user, [f"{org}.documents:read"], folder)
    after_grant = gd.check(org, user, f"{org}.documents:read", folder, at_least_revision=granted.revision)
    revoked = gd.revoke(org, user, [f"{org}.documents:read"], folder)
    after_revoke = gd.check(org, user, f"{org}.documents:read", folder, at_least_revision=revoked.revision)
    gd.remove_user(org, user)
    return [after_grant.allowed, after_revoke.allowed]


def main() -> int:
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    token = os.environ.get("GRANTD_TOKEN")
    if not token:
        print("set GRANTD_TOKEN to an admin token: grantd token --subject root --admin", file=sys.stderr)
        return 2
    org = f"example-{uuid.uuid4().hex[:8]}"
    with GrantdClient(target, token=token) as gd:
        allowed = flow(gd, org, "auth0|alice")
    print(f"{org}: allowed after grant={allowed[0]}, after revoke={allowed[1]}")
    return 0 if allowed == [True, False] else 1


if __name__ == "__main__":
    sys.exit(main())
