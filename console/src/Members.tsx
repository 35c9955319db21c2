import { useEffect, useState } from "preact/hooks";
import type { Membership } from "./gen/grants/v1/types_pb.ts";
import type { OrgContext } from "./Organization.tsx";
import { allPages, when, type Problem } from "./rpc.ts";
import { ProblemNote } from "./ui.tsx";
import { MemberPermissions } from "./MemberPermissions.tsx";

export function Members({ context }: { context: OrgContext }) {
  const { clients } = context.session;
  const [members, setMembers] = useState<Membership[] | null>(null);
  const [search, setSearch] = useState("");
  const [open, setOpen] = useState<string | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);

  const load = () =>
    allPages(async (pageToken) => {
      const page = await clients.directory.listOrganizationMembers({
        organizationId: context.organizationId,
        pageSize: 1000,
        pageToken,
      });
      return { items: page.members, next: page.nextPageToken };
    })
      .then(setMembers)
      .catch((err) => setProblem(context.report(err)));

  useEffect(() => {
    load();
  }, []);

  if (open) {
    return (
      <MemberPermissions
        context={context}
        userId={open}
        onClose={() => {
          setOpen(null);
          load();
        }}
      />
    );
  }
  if (problem) return <ProblemNote problem={problem} />;
  if (!members) return <p>Loading members…</p>;
  const needle = search.trim().toLowerCase();
  const shown = members.filter((m) => m.userId.toLowerCase().includes(needle));
  return (
    <section aria-labelledby="members-title">
      <h2 id="members-title">Members of {context.organizationId}</h2>
      <div class="field">
        <label for="member-search">Search members</label>
        <input id="member-search" type="search" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />
      </div>
      <p class="hint">
        {shown.length} of {members.length} members
      </p>
      <ul class="rows">
        {shown.map((m) => (
          <li key={m.userId}>
            <button type="button" class="link" onClick={() => setOpen(m.userId)}>
              {m.userId}
            </button>
            <span class="meta">
              member since {when(m.addedAt)} · added by {m.addedBy}
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}
