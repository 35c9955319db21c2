import { useEffect, useState } from "preact/hooks";
import type { Permission } from "./gen/grants/v1/types_pb.ts";
import type { Session } from "./App.tsx";
import { allPages, problemOf, type Problem } from "./rpc.ts";
import { ProblemNote } from "./ui.tsx";
import { Members } from "./Members.tsx";
import { ResourceAccess } from "./ResourceAccess.tsx";
import { CheckAccess } from "./CheckAccess.tsx";
import { Changes } from "./Changes.tsx";

/** What the caller may do in one organization, as the server would decide it. */
export interface Rights {
  view: boolean;
  edit: boolean;
}

/** The organization as the views share it. */
export interface OrgContext {
  session: Session;
  organizationId: string;
  rights: Rights;
  catalog: Permission[];
  report: (err: unknown) => Problem;
}

const TABS = ["Members", "Resource access", "Check", "Changes"] as const;
type Tab = (typeof TABS)[number];

export function Organization({ session, organizationId }: { session: Session; organizationId: string }) {
  const [context, setContext] = useState<OrgContext | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [tab, setTab] = useState<Tab>("Members");

  const report = (err: unknown) => {
    const p = problemOf(err);
    if (p.unauthenticated) session.signOut(p);
    return p;
  };

  useEffect(() => {
    const { claims, clients } = session;
    // The caller may always check their own rights; an administrator needs no check.
    const holds = async (permissionName: string) =>
      claims.admin ||
      (
        await clients.grants.checkPermission({
          organizationId,
          userId: claims.subject,
          permission: { case: "permissionName", value: permissionName },
        })
      ).allowed;
    Promise.all([
      holds("edit_org_users"),
      holds("view_org_users"),
      allPages(async (pageToken) => {
        const page = await clients.directory.listPermissions({ pageSize: 1000, pageToken });
        return { items: page.permissions, next: page.nextPageToken };
      }),
    ])
      .then(([edit, view, catalog]) =>
        setContext({ session, organizationId, rights: { edit, view: view || edit }, catalog, report }),
      )
      .catch((err) => setProblem(report(err)));
  }, []);

  if (problem) return <ProblemNote problem={problem} />;
  if (!context) return <p>Loading {organizationId}…</p>;
  const offered = TABS.filter((t) => t === "Check" || (t === "Resource access" ? context.rights.edit : context.rights.view));
  return (
    <section aria-label={`Organization ${organizationId}`}>
      {!context.rights.view && (
        <p class="notice">You may check your own permissions here; reading this organization needs view_org_users.</p>
      )}
      <nav class="tabs" role="tablist">
        {offered.map((t) => (
          <button type="button" role="tab" aria-selected={t === tab} key={t} onClick={() => setTab(t)}>
            {t}
          </button>
        ))}
      </nav>
      {tab === "Members" && context.rights.view && <Members context={context} />}
      {tab === "Resource access" && context.rights.edit && <ResourceAccess context={context} />}
      {(tab === "Check" || !context.rights.view) && <CheckAccess context={context} />}
      {tab === "Changes" && context.rights.view && <Changes context={context} />}
    </section>
  );
}
