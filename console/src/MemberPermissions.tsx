import { useEffect, useState } from "preact/hooks";
import type { Grant } from "./gen/grants/v1/types_pb.ts";
import type { OrgContext } from "./Organization.tsx";
import { allPages, when, type Problem } from "./rpc.ts";
import { Confirm, describeResource, Notice, ProblemNote, TrashIcon } from "./ui.tsx";
import { AddPermissions } from "./AddPermissions.tsx";

const keyOf = (g: Grant) => `${g.resource?.type}\n${g.resource?.id}\n${g.permissionId}`;

/** A question waiting for the operator's yes: its words and what a yes does. */
interface Pending {
  title: string;
  text: string;
  confirmLabel: string;
  run: () => Promise<void>;
}

/** Auth0's Permissions view: every grant of one member, each with a trash icon. */
export function MemberPermissions({ context, userId, onClose }: { context: OrgContext; userId: string; onClose: () => void }) {
  const { grants: grantsClient } = context.session.clients;
  const { organizationId } = context;
  const edit = context.rights.edit;
  const [grants, setGrants] = useState<Grant[] | null>(null);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [pending, setPending] = useState<Pending | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const load = () =>
    allPages(async (pageToken) => {
      const page = await grantsClient.listUserPermissions({ organizationId, userId, pageSize: 1000, pageToken });
      return { items: page.grants, next: page.nextPageToken };
    })
      .then((all) => {
        setGrants(all);
        setSelected(new Set());
      })
      .catch((err) => setProblem(context.report(err)));

  useEffect(() => {
    load();
  }, []);

  const act = async (work: () => Promise<string>) => {
    setPending(null);
    setProblem(null);
    try {
      setNotice(await work());
    } catch (err) {
      setNotice(null);
      setProblem(context.report(err));
    }
    await load();
  };

  // RemoveUserPermissions revokes permissions on one resource: the selection is sent as
  // one request per resource it spans (one request when all are on the same resource).
  const remove = (chosen: Grant[]) => async () => {
    const byResource = new Map<string, Grant[]>();
    for (const g of chosen) {
      const key = `${g.resource?.type}\n${g.resource?.id}`;
      byResource.set(key, [...(byResource.get(key) ?? []), g]);
    }
    let removed = 0;
    for (const group of byResource.values()) {
      const resource = group[0].resource;
      const answer = await grantsClient.removeUserPermissions({
        organizationId,
        userId,
        permissionIds: group.map((g) => g.permissionId),
        resource: resource?.type === "organization" ? undefined : resource,
      });
      removed += answer.removed.length;
    }
    return `Removed ${removed} permission${removed === 1 ? "" : "s"} from ${userId}.`;
  };

  const askRemoveOne = (g: Grant) =>
    setPending({
      title: "Remove permission",
      text: `Remove ${g.permissionName} on ${describeResource(g.resource)} from ${userId} in ${organizationId}?`,
      confirmLabel: "Remove",
      run: () => act(remove([g])),
    });

  const askRemoveSelected = () => {
    const chosen = (grants ?? []).filter((g) => selected.has(keyOf(g)));
    setPending({
      title: `Remove ${chosen.length} permissions`,
      text: `Remove from ${userId} in ${organizationId}: ${chosen
        .map((g) => `${g.permissionName} on ${describeResource(g.resource)}`)
        .join("; ")}?`,
      confirmLabel: "Remove",
      run: () => act(remove(chosen)),
    });
  };

  const askRemoveMember = () => {
    const count = grants?.length ?? 0;
    setPending({
      title: "Remove from organization",
      text: `Remove ${userId} from ${organizationId}? ${count} grant${count === 1 ? "" : "s"} in ${organizationId} go${
        count === 1 ? "es" : ""
      } with the membership.`,
      confirmLabel: "Remove from organization",
      run: async () => {
        setPending(null);
        try {
          await grantsClient.removeUserFromOrganization({ organizationId, userId });
          onClose();
        } catch (err) {
          setProblem(context.report(err));
        }
      },
    });
  };

  const toggle = (g: Grant) => {
    const next = new Set(selected);
    if (!next.delete(keyOf(g))) next.add(keyOf(g));
    setSelected(next);
  };

  return (
    <section aria-labelledby="member-title">
      <button type="button" class="link" onClick={onClose}>
        ← All members
      </button>
      <h2 id="member-title">
        {userId} <span class="meta">in {organizationId}</span>
      </h2>
      <ProblemNote problem={problem} />
      <Notice text={notice} />
      <h3>Permissions</h3>
      {!grants ? (
        <p>Loading permissions…</p>
      ) : grants.length === 0 ? (
        <p>No permissions in {organizationId}.</p>
      ) : (
        <ul class="rows" aria-label="Permissions">
          {grants.map((g) => (
            <li key={keyOf(g)} class="grant">
              {edit && (
                <input
                  type="checkbox"
                  aria-label={`Select ${g.permissionName} on ${describeResource(g.resource)}`}
                  checked={selected.has(keyOf(g))}
                  onChange={() => toggle(g)}
                />
              )}
              <span class="permission">{g.permissionName}</span>
              <span class="resource">{describeResource(g.resource)}</span>
              <span class="meta">
                granted by {g.grantedBy} · {when(g.grantedAt)}
              </span>
              {edit && (
                <button
                  type="button"
                  class="icon danger"
                  aria-label={`Remove ${g.permissionName} on ${describeResource(g.resource)}`}
                  title="Remove"
                  onClick={() => askRemoveOne(g)}
                >
                  <TrashIcon />
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {edit && (
        <div class="actions">
          <button type="button" class="danger" disabled={selected.size === 0} onClick={askRemoveSelected}>
            Remove selected ({selected.size})
          </button>
          <button type="button" class="danger" onClick={askRemoveMember}>
            Remove from organization
          </button>
        </div>
      )}
      {edit && grants && (
        <AddPermissions context={context} userId={userId} held={grants} onAdded={(text) => act(async () => text)} />
      )}
      {pending && (
        <Confirm
          title={pending.title}
          confirmLabel={pending.confirmLabel}
          onConfirm={pending.run}
          onCancel={() => setPending(null)}
        >
          <p>{pending.text}</p>
        </Confirm>
      )}
    </section>
  );
}
