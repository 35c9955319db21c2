"""The client against a live grantd: the flow of example.py, then the errors a caller
must be ready for."""

from __future__ import annotations

import uuid

import grpc
import pytest

from example import flow
from grantd_client import GrantdClient, Resource


def _org() -> str:
    return f"py-{uuid.uuid4().hex[:12]}"


def test_example_flow(grantd) -> None:
    with GrantdClient(grantd.addr, token=grantd.token("root", admin=True)) as gd:
        assert flow(gd, _org(), "auth0|alice") == [True, False]


def test_flow_step_by_step(grantd) -> None:
    org, alice = _org(), "auth0|alice"
    perm = f"{org}.documents:write"
    with GrantdClient(grantd.addr, token=grantd.token("root", admin=True)) as gd:
        created = gd.create_organization(org, "Acme")
        assert created.organization.id == org and created.revision > 0
        permission = gd.create_permission(perm).permission
        assert permission.name == perm and permission.id

        # Members only: a grant before membership is FAILED_PRECONDITION.
        with pytest.raises(grpc.RpcError) as err:
            gd.grant(org, alice, [perm])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        assert gd.add_member(org, alice).created is True
        assert gd.add_member(org, alice).created is False  # idempotent

        folder = Resource(type="folder", id="f1")
        granted = gd.grant(org, alice, [perm], folder)
        assert list(granted.added) == [permission.id]
        assert list(gd.grant(org, alice, [perm], folder).already_held) == [permission.id]

        checked = gd.check(org, alice, perm, Resource(type="folder", id="f1"), at_least_revision=granted.revision)
        assert checked.allowed is True
        assert checked.matched.permission_name == perm
        assert checked.matched.granted_by == "root"
        assert gd.check(org, alice, perm, Resource(type="folder", id="f2")).allowed is False
        assert [g.permission_name for g in gd.list_grants(org, alice)] == [perm]

        # Alice may check her own permissions, but not grant.
        with GrantdClient(grantd.addr, token=grantd.token(alice)) as as_alice:
            assert as_alice.check(org, alice, perm, folder).allowed is True
            with pytest.raises(grpc.RpcError) as err:
                as_alice.grant(org, alice, [perm])
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        revoked = gd.revoke(org, alice, [perm], folder)
        assert list(revoked.removed) == [permission.id]
        assert revoked.revision > granted.revision
        assert gd.check(org, alice, perm, folder, at_least_revision=revoked.revision).allowed is False

        gd.grant(org, alice, [perm])  # org-wide, so that removal has a grant to take
        assert gd.remove_user(org, alice).removed_grant_count == 1
        with pytest.raises(grpc.RpcError) as err:
            gd.remove_user(org, alice)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert gd.remove_user(org, alice, allow_missing=True).removed_grant_count == 0
        assert gd.check(org, alice, perm).allowed is False


def test_errors(grantd) -> None:
    with GrantdClient(grantd.addr, token=grantd.token("root", admin=True)) as gd:
        with pytest.raises(grpc.RpcError) as err:
            gd.check(f"missing-{uuid.uuid4().hex[:8]}", "bob", "documents:read")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            gd.grant(_org(), "bob", ["Not A Name"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        org = _org()
        gd.create_organization(org)
        with pytest.raises(grpc.RpcError) as err:
            gd.create_organization(org)
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with GrantdClient(grantd.addr, token="not-a-jwt") as anonymous:
        with pytest.raises(grpc.RpcError) as err:
            anonymous.create_organization(_org())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
