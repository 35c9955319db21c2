// The whole flow against a running grantd: organization, permission, member, grant,
// check, revoke, check, remove the user.
//
//   export GRANTD_TOKEN=$(grantd token --subject root --admin)
//   npx tsx src/example.ts 127.0.0.1:50051
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { GrantdClient } from './grantd.ts';

/** Runs the flow; answers `allowed` as seen after the grant and after the revoke. */
export async function flow(gd: GrantdClient, org: string, user: string): Promise<[boolean, boolean]> {
  const perm = `${org}.documents:read`;
  const folder = { type: 'folder', id: 'f1' };
  await gd.createOrganization(org, 'Example Inc.');
  await gd.createPermission(perm, 'Read documents');
  await gd.addMember(org, user);
  const granted = await gd.grant(org, user, [perm], folder);
  const afterGrant = await gd.check(org, user, perm, folder, granted.revision);
  const revoked = await gd.revoke(org, user, [perm], folder);
  const afterRevoke = await gd.check(org, user, perm, folder, revoked.revision);
  await gd.removeUser(org, user);
  return [afterGrant.allowed, afterRevoke.allowed];
}

async function main(): Promise<number> {
  const address = process.argv[2] ?? '127.0.0.1:50051';
  const token = process.env.GRANTD_TOKEN;
  if (!token) {
    console.error('set GRANTD_TOKEN to an admin token: grantd token --subject root --admin');
    return 2;
  }
  const org = `example-${randomUUID().slice(0, 8)}`;
  const gd = new GrantdClient(address, { token });
  try {
    const [afterGrant, afterRevoke] = await flow(gd, org, 'auth0|alice');
    console.log(`${org}: allowed after grant=${afterGrant}, after revoke=${afterRevoke}`);
    return afterGrant && !afterRevoke ? 0 : 1;
  } finally {
    gd.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main();
}
