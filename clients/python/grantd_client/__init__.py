"""A small typed client for grantd (grants.v1).

    from grantd_client import GrantdClient

    with GrantdClient("127.0.0.1:50051", token=token) as gd:
        gd.create_organization("acme", "Acme Inc.")
        gd.create_permission("documents:read")
        gd.add_member("acme", "auth0|alice")
        gd.grant("acme", "auth0|alice", ["documents:read"])
        assert gd.check("acme", "auth0|alice", "documents:read").allowed

The raw generated stubs and messages are re-exported (`pb`, `directory_pb`, ...) for
everything the wrapper does not cover. Run `python generate.py` first: the stubs are
generated from proto/, not committed.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterable, Sequence
from typing import Optional

import grpc

_GEN = pathlib.Path(__file__).resolve().parent / "_gen"
if not (_GEN / "grants" / "v1" / "grant_service_pb2.py").exists():
    raise ImportError(
        f"grants.v1 stubs are missing in {_GEN}: run `python generate.py` in "
        f"{_GEN.parent.parent} (it generates them from proto/ with grpcio-tools)"
    )
if str(_GEN) not in sys.path:
    sys.path.insert(0, str(_GEN))

from grants.v1 import audit_service_pb2 as audit_pb  # noqa: E402
from grants.v1 import audit_service_pb2_grpc as audit_grpc  # noqa: E402
from grants.v1 import directory_service_pb2 as directory_pb  # noqa: E402
from grants.v1 import directory_service_pb2_grpc as directory_grpc  # noqa: E402
from grants.v1 import grant_service_pb2 as pb  # noqa: E402
from grants.v1 import grant_service_pb2_grpc as grant_grpc  # noqa: E402
from grants.v1 import types_pb2 as types_pb  # noqa: E402

__all__ = [
    "GrantdClient",
    "Resource",
    "audit_pb",
    "directory_pb",
    "pb",
    "types_pb",
]

Resource = types_pb.Resource


class _BearerAuth(grpc.AuthMetadataPlugin):
    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback(self._metadata, None)


class GrantdClient:
    """One channel to grantd, with a bearer token sent on every call.

    Errors surface as `grpc.RpcError`; `err.code()` is the `grpc.StatusCode` documented
    for each RPC in proto/grants/v1 (NOT_FOUND, FAILED_PRECONDITION, ...).
    """

    def __init__(
        self,
        target: str,
        *,
        token: str,
        root_certificates: Optional[bytes] = None,
        timeout: float = 10.0,
    ) -> None:
        if root_certificates is not None:
            creds = grpc.composite_channel_credentials(
                grpc.ssl_channel_credentials(root_certificates),
                grpc.metadata_call_credentials(_BearerAuth(token)),
            )
            self.channel = grpc.secure_channel(target, creds)
            self._metadata: tuple[tuple[str, str], ...] = ()
        else:
            # Call credentials need TLS in gRPC: on a plaintext channel (local
            # development) send the header as plain metadata instead.
            self.channel = grpc.insecure_channel(target)
            self._metadata = (("authorization", f"Bearer {token}"),)
        self.timeout = timeout
        self.directory = directory_grpc.DirectoryServiceStub(self.channel)
        self.grants = grant_grpc.GrantServiceStub(self.channel)
        self.audit = audit_grpc.AuditServiceStub(self.channel)

    def __enter__(self) -> "GrantdClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _kw(self) -> dict:
        return {"metadata": self._metadata, "timeout": self.timeout}

    # Directory

    def create_organization(self, org_id: str, display_name: str = "") -> directory_pb.CreateOrganizationResponse:
        req = directory_pb.CreateOrganizationRequest(id=org_id, display_name=display_name)
        return self.directory.CreateOrganization(req, **self._kw())

    def delete_organization(self, org_id: str, *, allow_missing: bool = False) -> directory_pb.DeleteOrganizationResponse:
        req = directory_pb.DeleteOrganizationRequest(id=org_id, allow_missing=allow_missing)
        return self.directory.DeleteOrganization(req, **self._kw())

    def create_permission(self, name: str, description: str = "") -> directory_pb.CreatePermissionResponse:
        req = directory_pb.CreatePermissionRequest(name=name, description=description)
        return self.directory.CreatePermission(req, **self._kw())

    def add_member(self, org_id: str, user_id: str) -> directory_pb.AddUserToOrganizationResponse:
        req = directory_pb.AddUserToOrganizationRequest(organization_id=org_id, user_id=user_id)
        return self.directory.AddUserToOrganization(req, **self._kw())

    # Grants

    def grant(
        self,
        org_id: str,
        user_id: str,
        permission_names: Sequence[str],
        resource: Optional[Resource] = None,
    ) -> pb.AddUserPermissionsResponse:
        req = pb.AddUserPermissionsRequest(
            organization_id=org_id, user_id=user_id, permission_names=list(permission_names), resource=resource
        )
        return self.grants.AddUserPermissions(req, **self._kw())

    def revoke(
        self,
        org_id: str,
        user_id: str,
        permission_names: Sequence[str],
        resource: Optional[Resource] = None,
    ) -> pb.RemoveUserPermissionsResponse:
        req = pb.RemoveUserPermissionsRequest(
            organization_id=org_id, user_id=user_id, permission_names=list(permission_names), resource=resource
        )
        return self.grants.RemoveUserPermissions(req, **self._kw())

    def check(
        self,
        org_id: str,
        user_id: str,
        permission_name: str,
        resource: Optional[Resource] = None,
        *,
        at_least_revision: int = 0,
    ) -> pb.CheckPermissionResponse:
        req = pb.CheckPermissionRequest(
            organization_id=org_id,
            user_id=user_id,
            permission_name=permission_name,
            resource=resource,
            at_least_revision=at_least_revision,
        )
        return self.grants.CheckPermission(req, **self._kw())

    def list_grants(self, org_id: str, user_id: str, *, page_size: int = 100) -> Iterable[types_pb.Grant]:
        """Every grant of the user in the organization, following page tokens."""
        token = ""
        while True:
            req = pb.ListUserPermissionsRequest(
                organization_id=org_id, user_id=user_id, page_size=page_size, page_token=token
            )
            resp = self.grants.ListUserPermissions(req, **self._kw())
            yield from resp.grants
            token = resp.next_page_token
            if not token:
                return

    def remove_user(
        self, org_id: str, user_id: str, *, allow_missing: bool = False
    ) -> pb.RemoveUserFromOrganizationResponse:
        req = pb.RemoveUserFromOrganizationRequest(
            organization_id=org_id, user_id=user_id, allow_missing=allow_missing
        )
        return self.grants.RemoveUserFromOrganization(req, **self._kw())
