-- The data the pgbench ceilings read and write: the shape grantd-bench seeds (100
-- permissions, 100 members, 10,000 grants of 100 permissions on 100 resources), under the
-- organization "ceiling". Run in a database grantd has migrated; safe to run again.
BEGIN;
DELETE FROM grants WHERE organization_id = 'ceiling';
DELETE FROM memberships WHERE organization_id = 'ceiling';
DELETE FROM organizations WHERE id = 'ceiling';
DELETE FROM permissions WHERE name LIKE 'ceiling-p%';
INSERT INTO organizations (id, display_name, created_at) VALUES ('ceiling', 'pgbench ceiling', now());
INSERT INTO permissions (id, name, description, created_at)
    SELECT gen_random_uuid(), 'ceiling-p' || i, '', now() FROM generate_series(0, 99) AS i;
INSERT INTO memberships (organization_id, user_id, added_at, added_by)
    SELECT 'ceiling', 'ceiling-u' || u, now(), 'ceiling' FROM generate_series(0, 99) AS u;
INSERT INTO grants (organization_id, user_id, resource_type, resource_id, permission_id, granted_at, granted_by)
    SELECT 'ceiling', 'ceiling-u' || k, 'bench_doc', 'seed-' || k, p.id, now(), 'ceiling'
    FROM generate_series(0, 99) AS k CROSS JOIN permissions AS p WHERE p.name LIKE 'ceiling-p%';
-- The add ceiling's change rows: a table shaped as grantd's `changes` (columns, defaults,
-- indexes), so that they cost what grantd's cost without grantd's sequencer numbering
-- them while it idles beside the ceiling.
CREATE TABLE IF NOT EXISTS ceiling_changes (LIKE changes INCLUDING ALL);
TRUNCATE ceiling_changes;
COMMIT;
ANALYZE;
