-- storage_targets is the service's own table: no organization owns a target, so tenants
-- get no grant and no policy (RLS, forced, denies them everything).
GRANT SELECT, INSERT, UPDATE, DELETE ON storage_targets TO vowvault_service;
ALTER TABLE storage_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage_targets FORCE ROW LEVEL SECURITY;
CREATE POLICY storage_targets_service_access ON storage_targets
    FOR ALL TO vowvault_service USING (true) WITH CHECK (true);
