-- The PostgreSQL ceiling of AddUserPermissions of one permission on a fresh resource: the
-- same inserts as grantd's add (one grant row, one change row, with grantd's keys and
-- foreign keys) with no revision counter. The change row carries its write's id and no
-- revision: grantd numbers change rows after they commit, outside the add. It goes to
-- ceiling_changes, shaped as grantd's `changes` (bench/sql/seed.sql), so that grantd's
-- sequencer leaves it alone. The member's
-- row is locked first (FOR UPDATE), so that writes for one member queue on it; the
-- grant's foreign-key check alone would only share it.
-- Values come from bench/run.sh as parameters, as grantd binds them: -D org=... (the
-- organization bench/sql/seed.sql creates), -D rtype=... (the resource type) and
-- -D permission=... (the id of the seeded permission grantd-bench's add names).
\set u random(0, 99)
\set r random(1, 2000000000)
BEGIN;
SELECT 1 FROM memberships WHERE organization_id = :org AND user_id = 'ceiling-u' || :u::text FOR UPDATE;
INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) VALUES (:org, 'ceiling-u' || :u::text, :rtype, 'c' || :client_id::text || '-' || :r::text, :permission::uuid, now(), :org) ON CONFLICT (organization_id, user_id, resource_type, resource_id, permission_id) DO NOTHING;
INSERT INTO ceiling_changes (write_id, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) VALUES (gen_random_uuid(), 1, :org, gen_random_uuid()::text, now(), :org, 'ceiling-u' || :u::text, :permission::uuid, :rtype, 'c' || :client_id::text || '-' || :r::text);
COMMIT;
