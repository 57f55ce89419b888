-- The stack's console role (infra/postgres/init.sh makes it) may write its audit rows; it only
-- reads everything else. Nothing happens where no such role exists (tests, other stacks).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mindora_console') THEN
        GRANT SELECT ON mindora_job_attempts, mindora_history_writers TO mindora_console;
        GRANT SELECT, INSERT ON mindora_console_actions TO mindora_console;
        GRANT USAGE ON SEQUENCE mindora_console_actions_id_seq TO mindora_console;
    END IF;
END
$$;
