// The console's only way to the server: the same gRPC services every client uses,
// over gRPC-web, with the caller's bearer token. No endpoint of its own decides rights.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { AuditService } from "./gen/grants/v1/audit_service_pb.ts";
import { DirectoryService } from "./gen/grants/v1/directory_service_pb.ts";
import { GrantService } from "./gen/grants/v1/grant_service_pb.ts";

export interface Clients {
  grants: Client<typeof GrantService>;
  directory: Client<typeof DirectoryService>;
  audit: Client<typeof AuditService>;
}

export function connect(token: string | null): Clients {
  const bearer: Interceptor = (next) => (request) => {
    if (token) request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  // The page is served by grantd itself, so the services are at its own origin.
  const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [bearer] });
  return {
    grants: createClient(GrantService, transport),
    directory: createClient(DirectoryService, transport),
    audit: createClient(AuditService, transport),
  };
}

const PLAIN_WORDS: Partial<Record<Code, string>> = {
  [Code.Unauthenticated]: "Not signed in: the token is missing, expired or not accepted by this server",
  [Code.PermissionDenied]: "Not allowed",
  [Code.NotFound]: "Not found",
  [Code.InvalidArgument]: "Not a valid request",
  [Code.AlreadyExists]: "Already exists",
  [Code.FailedPrecondition]: "Not possible now",
  [Code.ResourceExhausted]: "Too much at once",
  [Code.Unavailable]: "The server is unavailable; try again",
  [Code.DeadlineExceeded]: "The server took too long",
  [Code.Aborted]: "Interrupted; try again",
};

/** An error as an operator reads it: what happened in plain words, the server's message, the code. */
export interface Problem {
  summary: string;
  message: string;
  code: string;
  unauthenticated: boolean;
}

export function problemOf(error: unknown): Problem {
  const err = ConnectError.from(error);
  return {
    summary: PLAIN_WORDS[err.code] ?? "Something went wrong",
    message: err.rawMessage,
    code: Code[err.code],
    unauthenticated: err.code === Code.Unauthenticated,
  };
}

export function isNotFound(error: unknown): boolean {
  return ConnectError.from(error).code === Code.NotFound;
}

export function when(timestamp: Timestamp | undefined): string {
  return timestamp ? timestampDate(timestamp).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "";
}

/** Every page of a paged list, up to `limit` items. */
export async function allPages<T>(
  fetchPage: (pageToken: string) => Promise<{ items: T[]; next: string }>,
  limit = 10_000,
): Promise<T[]> {
  const items: T[] = [];
  let token = "";
  do {
    const page = await fetchPage(token);
    items.push(...page.items);
    token = page.next;
  } while (token && items.length < limit);
  return items;
}
