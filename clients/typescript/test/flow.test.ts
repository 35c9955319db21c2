// The client against a live grantd: the flow of src/example.ts, then the errors a
// caller must be ready for.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

import { flow } from '../src/example.ts';
import { GrantdClient, Status, type ServiceError } from '../src/grantd.ts';
import { startGrantd, type Grantd } from './grantd-server.ts';

let server: Grantd;
before(async () => {
  server = await startGrantd();
});
after(async () => {
  await server?.stop();
});

const newOrg = () => `ts-${randomUUID().slice(0, 12)}`;

async function rejectsWith(promise: Promise<unknown>, code: Status): Promise<void> {
  await assert.rejects(promise, (err: ServiceError) => {
    assert.equal(Status[err.code], Status[code], err.message);
    return true;
  });
}

test('example flow: allowed after grant, not after revoke', async () => {
  const gd = new GrantdClient(server.address, { token: server.token('root', true) });
  try {
    assert.deepEqual(await flow(gd, newOrg(), 'auth0|alice'), [true, false]);
  } finally {
    gd.close();
  }
});

test('flow step by step', async () => {
  const org = newOrg();
  const alice = 'auth0|alice';
  const perm = `${org}.documents:write`;
  const folder = { type: 'folder', id: 'f1' };
  const gd = new GrantdClient(server.address, { token: server.token('root', true) });
  const asAlice = new GrantdClient(server.address, { token: server.token(alice) });
  try {
    const created = await gd.createOrganization(org, 'Acme');
    assert.equal(created.organization?.id, org);
    assert.ok(BigInt(created.revision) > 0n);
    const permission = (await gd.createPermission(perm)).permission!;
    assert.equal(permission.name, perm);

    // Members only.
    await rejectsWith(gd.grant(org, alice, [perm]), Status.FAILED_PRECONDITION);
    assert.equal((await gd.addMember(org, alice)).created, true);
    assert.equal((await gd.addMember(org, alice)).created, false);

    const granted = await gd.grant(org, alice, [perm], folder);
    assert.deepEqual(granted.added, [permission.id]);
    assert.deepEqual((await gd.grant(org, alice, [perm], folder)).alreadyHeld, [permission.id]);

    const checked = await gd.check(org, alice, perm, folder, granted.revision);
    assert.equal(checked.allowed, true);
    assert.equal(checked.matched?.permissionName, perm);
    assert.equal(checked.matched?.grantedBy, 'root');
    assert.equal((await gd.check(org, alice, perm, { type: 'folder', id: 'f2' })).allowed, false);
    assert.deepEqual((await gd.listGrants(org, alice)).map((g) => g.permissionName), [perm]);

    // Alice may check her own permissions, but not grant.
    assert.equal((await asAlice.check(org, alice, perm, folder)).allowed, true);
    await rejectsWith(asAlice.grant(org, alice, [perm]), Status.PERMISSION_DENIED);

    const revoked = await gd.revoke(org, alice, [perm], folder);
    assert.deepEqual(revoked.removed, [permission.id]);
    assert.ok(BigInt(revoked.revision) > BigInt(granted.revision));
    assert.equal((await gd.check(org, alice, perm, folder, revoked.revision)).allowed, false);

    await gd.grant(org, alice, [perm]); // org-wide, so that removal has a grant to take
    assert.equal((await gd.removeUser(org, alice)).removedGrantCount, '1');
    await rejectsWith(gd.removeUser(org, alice), Status.NOT_FOUND);
    assert.equal((await gd.removeUser(org, alice, true)).removedGrantCount, '0');
    assert.equal((await gd.check(org, alice, perm)).allowed, false);
  } finally {
    gd.close();
    asAlice.close();
  }
});

test('errors', async () => {
  const gd = new GrantdClient(server.address, { token: server.token('root', true) });
  const anonymous = new GrantdClient(server.address, { token: 'not-a-jwt' });
  try {
    await rejectsWith(gd.check(`missing-${randomUUID().slice(0, 8)}`, 'bob', 'documents:read'), Status.NOT_FOUND);
    await rejectsWith(gd.grant(newOrg(), 'bob', ['Not A Name']), Status.INVALID_ARGUMENT);
    const org = newOrg();
    await gd.createOrganization(org);
    await rejectsWith(gd.createOrganization(org), Status.ALREADY_EXISTS);
    await rejectsWith(anonymous.createOrganization(newOrg()), Status.UNAUTHENTICATED);
  } finally {
    gd.close();
    anonymous.close();
  }
});
