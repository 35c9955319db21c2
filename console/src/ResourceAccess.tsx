import { useState } from "preact/hooks";
import type { OrgContext } from "./Organization.tsx";
import { type Problem } from "./rpc.ts";
import { Confirm, Notice, ProblemNote } from "./ui.tsx";

/** RemoveResourcePermissions: one user's or every user's grants on a resource. */
export function ResourceAccess({ context }: { context: OrgContext }) {
  const [resourceType, setResourceType] = useState("");
  const [resourceId, setResourceId] = useState("");
  const [userId, setUserId] = useState("");
  const [allUsers, setAllUsers] = useState(false);
  const [asking, setAsking] = useState(false);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const who = allUsers ? "every user" : userId.trim();
  const what = `${resourceType.trim()} ${resourceId.trim()}`;

  const remove = async () => {
    setAsking(false);
    setProblem(null);
    setNotice(null);
    try {
      const answer = await context.session.clients.grants.removeResourcePermissions({
        userId: allUsers ? "" : userId.trim(),
        allUsers,
        resources: [{ organizationId: context.organizationId, type: resourceType.trim(), id: resourceId.trim() }],
      });
      const count = answer.results.reduce((sum, r) => sum + Number(r.removedCount), 0);
      setNotice(`Removed ${count} grant${count === 1 ? "" : "s"} of ${who} on ${what}.`);
    } catch (err) {
      setProblem(context.report(err));
    }
  };

  return (
    <form
      class="panel"
      aria-labelledby="resource-title"
      onSubmit={(event) => {
        event.preventDefault();
        setAsking(true);
      }}
    >
      <h2 id="resource-title">Remove resource access</h2>
      <ProblemNote problem={problem} />
      <Notice text={notice} />
      <div class="field">
        <label for="resource-type">Resource type</label>
        <input id="resource-type" required value={resourceType} onInput={(e) => setResourceType(e.currentTarget.value)} />
      </div>
      <div class="field">
        <label for="resource-id">Resource id</label>
        <input id="resource-id" required value={resourceId} onInput={(e) => setResourceId(e.currentTarget.value)} />
      </div>
      <label class="inline">
        <input type="checkbox" checked={allUsers} onChange={(e) => setAllUsers(e.currentTarget.checked)} /> All users
      </label>
      {!allUsers && (
        <div class="field">
          <label for="resource-user">User id</label>
          <input id="resource-user" required value={userId} onInput={(e) => setUserId(e.currentTarget.value)} />
        </div>
      )}
      <button type="submit" class="danger">
        Remove access
      </button>
      {asking && (
        <Confirm title="Remove resource access" confirmLabel="Remove access" onConfirm={remove} onCancel={() => setAsking(false)}>
          <p>
            Remove every grant of {who} on {what} in {context.organizationId}?
          </p>
        </Confirm>
      )}
    </form>
  );
}
