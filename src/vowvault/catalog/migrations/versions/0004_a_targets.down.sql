DROP POLICY IF EXISTS storage_targets_service_access ON storage_targets;
REVOKE ALL ON storage_targets FROM vowvault_service;
