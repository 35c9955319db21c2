-- grantd's AddUserPermissions of one permission on a fresh resource, statement for
-- statement as its statement log shows them (src/service/grants.rs, an admin caller),
-- with pgbench variables in place of its parameters (the constant ones come from
-- bench/run.sh as -D org=... so that they are parameters too, as grantd sends them).
\set u random(0, 99)
\set r random(1, 2000000000)
BEGIN;
SELECT "memberships"."user_id" FROM "memberships" WHERE "memberships"."organization_id" = :org AND "memberships"."user_id" = 'ceiling-u' || :u::text LIMIT 1 FOR UPDATE;
SELECT p.id, p.name, p.description, p.created_at FROM permissions p WHERE p.id IN (SELECT wanted FROM unnest('{}'::uuid[]) AS wanted UNION ALL SELECT named.id FROM permissions named JOIN unnest(ARRAY[:perm]::text[]) AS wanted(name) ON named.name = wanted.name) FOR KEY SHARE OF p \gset
INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by) SELECT :org, 'ceiling-u' || :u::text, :rtype, 'c' || :client_id::text || '-' || :r::text, permission_id, now(), :org FROM UNNEST(ARRAY[:id]::uuid[]) AS listed(permission_id) ON CONFLICT (organization_id, user_id, resource_type, resource_id, permission_id) DO NOTHING RETURNING permission_id;
WITH bump AS (UPDATE revision_counter SET value = value + 1 WHERE id = 1 RETURNING value), appended AS (INSERT INTO changes (revision, kind, actor, request_id, at, organization_id, user_id, permission_id, resource_type, resource_id) SELECT bump.value - 1 + e.ordinal, e.kind, :org, gen_random_uuid()::text, now(), NULLIF(e.organization_id, ''), NULLIF(e.user_id, ''), NULLIF(e.permission_id, '00000000-0000-0000-0000-000000000000'::uuid), NULLIF(e.resource_type, ''), NULLIF(e.resource_id, '') FROM bump, UNNEST(ARRAY[1]::smallint[], ARRAY[:org], ARRAY['ceiling-u' || :u::text], ARRAY[:id]::uuid[], ARRAY[:rtype], ARRAY['c' || :client_id::text || '-' || :r::text]) WITH ORDINALITY AS e(kind, organization_id, user_id, permission_id, resource_type, resource_id, ordinal)) SELECT value FROM bump;
COMMIT;
