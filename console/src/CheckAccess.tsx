import { useState } from "preact/hooks";
import type { CheckPermissionResponse } from "./gen/grants/v1/grant_service_pb.ts";
import type { OrgContext } from "./Organization.tsx";
import { when, type Problem } from "./rpc.ts";
import { describeResource, ProblemNote } from "./ui.tsx";

/** "May user U do P on resource R?", with the grant that answered yes. */
export function CheckAccess({ context }: { context: OrgContext }) {
  const [userId, setUserId] = useState(context.rights.view ? "" : context.session.claims.subject);
  const [permissionName, setPermissionName] = useState("");
  const [resourceType, setResourceType] = useState("");
  const [resourceId, setResourceId] = useState("");
  const [answer, setAnswer] = useState<CheckPermissionResponse | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);

  const submit = async (event: Event) => {
    event.preventDefault();
    setProblem(null);
    setAnswer(null);
    const orgWide = resourceType.trim() === "" && resourceId.trim() === "";
    try {
      setAnswer(
        await context.session.clients.grants.checkPermission({
          organizationId: context.organizationId,
          userId: userId.trim(),
          permission: { case: "permissionName", value: permissionName.trim() },
          resource: orgWide ? undefined : { type: resourceType.trim(), id: resourceId.trim() },
        }),
      );
    } catch (err) {
      setProblem(context.report(err));
    }
  };

  const matched = answer?.matched;
  return (
    <form class="panel" aria-labelledby="check-title" onSubmit={submit}>
      <h2 id="check-title">Check</h2>
      <div class="field">
        <label for="check-user">User id</label>
        <input
          id="check-user"
          required
          value={userId}
          readOnly={!context.rights.view}
          onInput={(e) => setUserId(e.currentTarget.value)}
        />
      </div>
      <div class="field">
        <label for="check-permission">Permission</label>
        <input
          id="check-permission"
          required
          list="check-catalog"
          value={permissionName}
          onInput={(e) => setPermissionName(e.currentTarget.value)}
        />
        <datalist id="check-catalog">
          {context.catalog.map((p) => (
            <option value={p.name} key={p.id} />
          ))}
        </datalist>
      </div>
      <div class="field">
        <label for="check-resource-type">Resource type (empty: the organization)</label>
        <input id="check-resource-type" value={resourceType} onInput={(e) => setResourceType(e.currentTarget.value)} />
      </div>
      <div class="field">
        <label for="check-resource-id">Resource id</label>
        <input id="check-resource-id" value={resourceId} onInput={(e) => setResourceId(e.currentTarget.value)} />
      </div>
      <button type="submit">Check</button>
      <ProblemNote problem={problem} />
      {answer && (
        <div class={answer.allowed ? "verdict allowed" : "verdict denied"} role="status">
          {answer.allowed ? (
            <p>
              <strong>Allowed.</strong> Matched grant: {matched?.permissionName} on {describeResource(matched?.resource)},
              granted by {matched?.grantedBy} at {when(matched?.grantedAt)}.
            </p>
          ) : (
            <p>
              <strong>Not allowed.</strong> {userId.trim()} holds no {permissionName.trim()} on that resource or
              organization-wide.
            </p>
          )}
          <p class="meta">as of revision {answer.revision.toString()}</p>
        </div>
      )}
    </form>
  );
}
