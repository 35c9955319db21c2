import { useEffect, useRef, useState } from "preact/hooks";
import { Code, ConnectError } from "@connectrpc/connect";
import { ChangeKind, type Change } from "./gen/grants/v1/audit_service_pb.ts";
import type { OrgContext } from "./Organization.tsx";
import { when, type Problem } from "./rpc.ts";
import { describeResource, ProblemNote } from "./ui.tsx";

/** Revisions read per ListChanges call when paging back; a page holds at most this many changes. */
const WINDOW = 1000n;
/** Changes shown per page when paging back. */
const PAGE = 50;

/** The organization's change feed, newest first, paged back with ListChanges and kept live by WatchChanges. */
export function Changes({ context }: { context: OrgContext }) {
  const { audit } = context.session.clients;
  const { organizationId } = context;
  const [changes, setChanges] = useState<Change[]>([]);
  // Revisions at or below this one have not been read yet.
  const [readDownTo, setReadDownTo] = useState<bigint | null>(null);
  const [live, setLive] = useState(false);
  const [problem, setProblem] = useState<Problem | null>(null);
  const names = new Map(context.catalog.map((p) => [p.id, p.name]));
  const stopped = useRef(new AbortController());

  /** Reads back from `below` until a page is full or the trail's start is reached. */
  const older = async (below: bigint) => {
    const found: Change[] = [];
    let upper = below;
    while (upper > 0n && found.length < PAGE) {
      const after = upper > WINDOW ? upper - WINDOW : 0n;
      const page = await audit.listChanges({ organizationId, afterRevision: after, pageSize: Number(WINDOW) });
      found.push(...page.changes.filter((c) => c.revision <= upper).reverse());
      upper = after;
    }
    if (found.length > PAGE) {
      // A window can hold more than a page: the rest is read with the next page.
      return { found: found.slice(0, PAGE), upper: found[PAGE - 1].revision - 1n };
    }
    return { found, upper };
  };

  const watch = async (after: bigint) => {
    let last = after;
    while (!stopped.current.signal.aborted) {
      try {
        setLive(true);
        for await (const answer of audit.watchChanges({ organizationId, afterRevision: last }, { signal: stopped.current.signal })) {
          const change = answer.change;
          if (!change) continue;
          last = change.revision;
          setChanges((shown) => [change, ...shown]);
        }
      } catch (err) {
        if (stopped.current.signal.aborted) return;
        const code = ConnectError.from(err).code;
        // A stream that reached its lifetime or fell behind is resumed from the last change seen.
        if (code !== Code.Unavailable && code !== Code.Aborted) {
          setLive(false);
          setProblem(context.report(err));
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  };

  useEffect(() => {
    const controller = stopped.current;
    (async () => {
      const head = await audit.listChanges({ organizationId, afterRevision: 0n, pageSize: 1 });
      const latest = head.latestRevision;
      const { found, upper } = await older(latest);
      setChanges(found);
      setReadDownTo(upper);
      watch(latest);
    })().catch((err) => setProblem(context.report(err)));
    return () => controller.abort();
  }, []);

  const more = async () => {
    if (readDownTo === null) return;
    try {
      const { found, upper } = await older(readDownTo);
      setChanges((shown) => [...shown, ...found]);
      setReadDownTo(upper);
    } catch (err) {
      setProblem(context.report(err));
    }
  };

  return (
    <section aria-labelledby="changes-title">
      <h2 id="changes-title">Changes in {organizationId}</h2>
      <p class="meta" role="status">
        {live ? "Live: new changes appear at the top." : "Not live."}
      </p>
      <ProblemNote problem={problem} />
      <ol class="rows changes" aria-label="Changes">
        {changes.map((c) => (
          <li key={c.revision.toString()}>
            <span class="revision">#{c.revision.toString()}</span>
            <span>{describeChange(c, names)}</span>
            <span class="meta">
              by {c.actor} · {when(c.at)}
            </span>
          </li>
        ))}
      </ol>
      {readDownTo !== null && readDownTo > 0n && (
        <button type="button" onClick={more}>
          Older changes
        </button>
      )}
      {readDownTo === 0n && changes.length === 0 && <p>No changes yet.</p>}
    </section>
  );
}

function describeChange(c: Change, names: Map<string, string>): string {
  const permission = names.get(c.permissionId) ?? c.permissionId;
  switch (c.kind) {
    case ChangeKind.GRANT_ADDED:
      return `${c.userId} was granted ${permission} on ${describeResource(c.resource)}`;
    case ChangeKind.GRANT_REMOVED:
      return `${c.userId} lost ${permission} on ${describeResource(c.resource)}`;
    case ChangeKind.MEMBER_ADDED:
      return `${c.userId} joined the organization`;
    case ChangeKind.MEMBER_REMOVED:
      return `${c.userId} left the organization`;
    case ChangeKind.ORGANIZATION_CREATED:
      return "organization created";
    case ChangeKind.ORGANIZATION_DELETED:
      return "organization deleted";
    default:
      return ChangeKind[c.kind] ?? String(c.kind);
  }
}
