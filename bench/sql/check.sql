-- One check in one statement (permission by name): grantd's CheckPermission statement as its
-- statement log showed it until checks were read in batches (src/storage/checks.rs now sends
-- a list of checks as arrays). Kept as the ceiling because it is the cheapest way to answer
-- one check with one statement: pgbench ran the batched statement with one check fewer
-- times a second (both on PostgreSQL's generic plan). pgbench variables stand in place of
-- its parameters (the constant ones come from bench/run.sh as -D org=... so that they
-- are parameters too, as grantd sends them: literals let PostgreSQL plan each call for
-- its values).
\set k random(0, 99)
\set p random(0, 99)
WITH wanted AS MATERIALIZED (SELECT id, name FROM permissions WHERE name = 'ceiling-p' || :p::text) SELECT revision_counter.value AS revision, organizations.id AS organization_found, permissions.id AS permission_found, permissions.name AS permission_name, COALESCE(on_resource.resource_type, org_wide.resource_type) AS resource_type, COALESCE(on_resource.resource_id, org_wide.resource_id) AS resource_id, COALESCE(on_resource.granted_at, org_wide.granted_at) AS granted_at, COALESCE(on_resource.granted_by, org_wide.granted_by) AS granted_by FROM revision_counter LEFT JOIN organizations ON organizations.id = :org LEFT JOIN wanted AS permissions ON true LEFT JOIN grants AS on_resource ON on_resource.organization_id = :org AND on_resource.user_id = 'ceiling-u' || :k::text AND on_resource.resource_type = :rtype AND on_resource.resource_id = 'seed-' || :k::text AND on_resource.permission_id = (SELECT id FROM wanted) LEFT JOIN grants AS org_wide ON org_wide.organization_id = :org AND org_wide.user_id = 'ceiling-u' || :k::text AND org_wide.resource_type = :otype AND org_wide.resource_id = :org AND org_wide.permission_id = (SELECT id FROM wanted) WHERE revision_counter.id = 1;
