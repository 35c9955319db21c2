// A small typed client for grantd (grants.v1) on @grpc/grpc-js.
//
// The .proto files are loaded at run time by @grpc/proto-loader (from ../../proto, or
// GRANTD_PROTO_DIR); the TypeScript types in src/gen/ are generated from the same files
// by `npm run generate` (proto-loader-gen-types). Field names are camelCase, 64-bit
// integers (revisions, counts) are decimal strings, enums are their names.
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

import type { ProtoGrpcType as AuditProto } from './gen/audit_service';
import type { ProtoGrpcType as DirectoryProto } from './gen/directory_service';
import type { ProtoGrpcType as GrantProto } from './gen/grant_service';
import type { AuditServiceClient } from './gen/grants/v1/AuditService';
import type { DirectoryServiceClient } from './gen/grants/v1/DirectoryService';
import type { GrantServiceClient } from './gen/grants/v1/GrantService';
import type { AddUserPermissionsResponse__Output } from './gen/grants/v1/AddUserPermissionsResponse';
import type { AddUserToOrganizationResponse__Output } from './gen/grants/v1/AddUserToOrganizationResponse';
import type { CheckPermissionResponse__Output } from './gen/grants/v1/CheckPermissionResponse';
import type { CreateOrganizationResponse__Output } from './gen/grants/v1/CreateOrganizationResponse';
import type { CreatePermissionResponse__Output } from './gen/grants/v1/CreatePermissionResponse';
import type { Grant__Output } from './gen/grants/v1/Grant';
import type { ListUserPermissionsResponse__Output } from './gen/grants/v1/ListUserPermissionsResponse';
import type { RemoveUserFromOrganizationResponse__Output } from './gen/grants/v1/RemoveUserFromOrganizationResponse';
import type { RemoveUserPermissionsResponse__Output } from './gen/grants/v1/RemoveUserPermissionsResponse';
import type { Resource } from './gen/grants/v1/Resource';

export type { Resource, Grant__Output as Grant };
export { status as Status } from '@grpc/grpc-js';
export type ServiceError = grpc.ServiceError;

const PROTO_DIR = process.env.GRANTD_PROTO_DIR ?? fileURLToPath(new URL('../../../proto', import.meta.url));

/** The three grants.v1 services, loaded once. */
export function loadGrantsV1(protoDir: string = PROTO_DIR): (GrantProto & DirectoryProto & AuditProto)['grants']['v1'] {
  const definition = protoLoader.loadSync(
    ['grants/v1/grant_service.proto', 'grants/v1/directory_service.proto', 'grants/v1/audit_service.proto'],
    { includeDirs: [protoDir], longs: String, enums: String, defaults: true, oneofs: true },
  );
  const loaded = grpc.loadPackageDefinition(definition) as unknown as GrantProto & DirectoryProto & AuditProto;
  return loaded.grants.v1;
}

export interface GrantdOptions {
  /** Bearer token (JWT), sent as `authorization: Bearer <token>` on every call. */
  token: string;
  /** Channel credentials; plaintext by default (local development). */
  credentials?: grpc.ChannelCredentials;
  /** Deadline of each call, in ms (default 10 s). */
  timeoutMs?: number;
}

/** Adds the bearer token and a deadline to every call of a client. */
function bearer(token: string, timeoutMs: number): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall({ ...options, deadline: options.deadline ?? Date.now() + timeoutMs }), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

type Callback<Res> = (err: grpc.ServiceError | null, res?: Res) => void;

function unary<Res>(call: (cb: Callback<Res>) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    call((err, res) => (err ? reject(err) : resolve(res as Res)));
  });
}

/**
 * One channel to grantd. Errors reject with a grpc.ServiceError whose `code` is the
 * status documented per RPC in proto/grants/v1 (compare with `Status.NOT_FOUND`, ...).
 */
export class GrantdClient {
  readonly grants: GrantServiceClient;
  readonly directory: DirectoryServiceClient;
  readonly audit: AuditServiceClient;

  constructor(address: string, options: GrantdOptions) {
    const v1 = loadGrantsV1();
    const credentials = options.credentials ?? grpc.credentials.createInsecure();
    const clientOptions = { interceptors: [bearer(options.token, options.timeoutMs ?? 10_000)] };
    this.grants = new v1.GrantService(address, credentials, clientOptions);
    // Share one channel (one HTTP/2 connection) between the three services.
    const channelOverride = this.grants.getChannel();
    this.directory = new v1.DirectoryService(address, credentials, { ...clientOptions, channelOverride });
    this.audit = new v1.AuditService(address, credentials, { ...clientOptions, channelOverride });
  }

  close(): void {
    this.grants.close();
  }

  createOrganization(id: string, displayName = ''): Promise<CreateOrganizationResponse__Output> {
    return unary((cb) => this.directory.CreateOrganization({ id, displayName }, cb));
  }

  createPermission(name: string, description = ''): Promise<CreatePermissionResponse__Output> {
    return unary((cb) => this.directory.CreatePermission({ name, description }, cb));
  }

  addMember(organizationId: string, userId: string): Promise<AddUserToOrganizationResponse__Output> {
    return unary((cb) => this.directory.AddUserToOrganization({ organizationId, userId }, cb));
  }

  grant(
    organizationId: string,
    userId: string,
    permissionNames: string[],
    resource?: Resource,
  ): Promise<AddUserPermissionsResponse__Output> {
    return unary((cb) => this.grants.AddUserPermissions({ organizationId, userId, permissionNames, resource }, cb));
  }

  revoke(
    organizationId: string,
    userId: string,
    permissionNames: string[],
    resource?: Resource,
  ): Promise<RemoveUserPermissionsResponse__Output> {
    return unary((cb) => this.grants.RemoveUserPermissions({ organizationId, userId, permissionNames, resource }, cb));
  }

  check(
    organizationId: string,
    userId: string,
    permissionName: string,
    resource?: Resource,
    atLeastRevision = '0',
  ): Promise<CheckPermissionResponse__Output> {
    return unary((cb) =>
      this.grants.CheckPermission({ organizationId, userId, permissionName, resource, atLeastRevision }, cb),
    );
  }

  /** Every grant of the user in the organization, following page tokens. */
  async listGrants(organizationId: string, userId: string, pageSize = 100): Promise<Grant__Output[]> {
    const all: Grant__Output[] = [];
    let pageToken = '';
    do {
      const page: ListUserPermissionsResponse__Output = await unary((cb) =>
        this.grants.ListUserPermissions({ organizationId, userId, pageSize, pageToken }, cb),
      );
      all.push(...page.grants);
      pageToken = page.nextPageToken;
    } while (pageToken);
    return all;
  }

  removeUser(
    organizationId: string,
    userId: string,
    allowMissing = false,
  ): Promise<RemoveUserFromOrganizationResponse__Output> {
    return unary((cb) => this.grants.RemoveUserFromOrganization({ organizationId, userId, allowMissing }, cb));
  }
}
