import { useState } from "preact/hooks";
import type { Grant } from "./gen/grants/v1/types_pb.ts";
import type { OrgContext } from "./Organization.tsx";
import { type Problem } from "./rpc.ts";
import { describeResource, ProblemNote } from "./ui.tsx";

/** Choose permissions from the catalog and grant them org-wide or on one resource. */
export function AddPermissions(props: {
  context: OrgContext;
  userId: string;
  held: Grant[];
  onAdded: (summary: string) => void;
}) {
  const { context, userId } = props;
  const [search, setSearch] = useState("");
  const [chosen, setChosen] = useState<Set<string>>(new Set());
  const [resourceType, setResourceType] = useState("");
  const [resourceId, setResourceId] = useState("");
  const [problem, setProblem] = useState<Problem | null>(null);

  const orgWide = resourceType.trim() === "" && resourceId.trim() === "";
  const resource = orgWide ? undefined : { type: resourceType.trim(), id: resourceId.trim() };
  const heldHere = new Set(
    props.held
      .filter((g) =>
        orgWide ? g.resource?.type === "organization" : g.resource?.type === resource?.type && g.resource?.id === resource?.id,
      )
      .map((g) => g.permissionId),
  );
  const needle = search.trim().toLowerCase();
  const shown = context.catalog.filter((p) => p.name.includes(needle));
  const names = new Map(context.catalog.map((p) => [p.id, p.name]));

  const toggle = (id: string) => {
    const next = new Set(chosen);
    if (!next.delete(id)) next.add(id);
    setChosen(next);
  };

  const submit = async (event: Event) => {
    event.preventDefault();
    setProblem(null);
    try {
      const answer = await context.session.clients.grants.addUserPermissions({
        organizationId: context.organizationId,
        userId,
        permissionIds: [...chosen],
        resource,
      });
      const list = (ids: string[]) => ids.map((id) => names.get(id) ?? id).join(", ");
      const parts = [];
      if (answer.added.length) parts.push(`Added ${list(answer.added)}`);
      if (answer.alreadyHeld.length) parts.push(`already held: ${list(answer.alreadyHeld)}`);
      setChosen(new Set());
      props.onAdded(`${parts.join("; ")} (${describeResource(resource)}).`);
    } catch (err) {
      setProblem(context.report(err));
    }
  };

  return (
    <form class="panel" aria-labelledby="add-title" onSubmit={submit}>
      <h3 id="add-title">Add permissions</h3>
      <ProblemNote problem={problem} />
      <div class="field">
        <label for="catalog-search">Search the catalog</label>
        <input id="catalog-search" type="search" value={search} onInput={(e) => setSearch(e.currentTarget.value)} />
      </div>
      <fieldset class="choices">
        <legend>Permissions</legend>
        {shown.map((p) => (
          <label key={p.id}>
            <input type="checkbox" checked={chosen.has(p.id)} onChange={() => toggle(p.id)} /> {p.name}
            {heldHere.has(p.id) && <span class="meta"> (held)</span>}
          </label>
        ))}
      </fieldset>
      <fieldset>
        <legend>On (leave both empty for the whole organization)</legend>
        <div class="field">
          <label for="add-resource-type">Resource type</label>
          <input id="add-resource-type" value={resourceType} onInput={(e) => setResourceType(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="add-resource-id">Resource id</label>
          <input id="add-resource-id" value={resourceId} onInput={(e) => setResourceId(e.currentTarget.value)} />
        </div>
      </fieldset>
      <button type="submit" disabled={chosen.size === 0}>
        Add {chosen.size || ""} permission{chosen.size === 1 ? "" : "s"}
      </button>
    </form>
  );
}
