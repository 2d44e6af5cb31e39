-- Scheduling rules in PostgreSQL: the same rules as src/vowvault/scheduling.py, which a
-- property-based test (tests/integration/test_scheduling_sql.py) checks against Python.
--
-- Time rules (module docstring of vowvault.scheduling):
--   * a cron expression matches wall-clock times in the policy's timezone;
--   * a wall-clock time that does not exist (clocks go forward) is read with the UTC
--     offset in force before the change;
--   * a wall-clock time that happens twice (clocks go back) fires once, at its second
--     (standard-time) occurrence.
-- This is exactly what (local_timestamp AT TIME ZONE tz) does, so the functions below use it.
--
-- This file is run as one statement string through SQLAlchemy text(): it must contain no
-- percent sign and no colon directly followed by a word character (bind parameter syntax);
-- double-colon casts are fine.

-- ---------------------------------------------------------------------------------------
-- Cron parsing
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION vowvault_cron_field(field text, lo integer, hi integer)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    part text;
    m text[];
    a integer;
    b integer;
    step integer;
    vals integer[] := '{}';
BEGIN
    IF field IS NULL OR lo IS NULL OR hi IS NULL OR lo > hi THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vowvault_cron_field needs a field and a range lo <= hi';
    END IF;
    field := btrim(field);
    IF field = '*' THEN
        RETURN NULL;
    END IF;
    IF field = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'empty cron field';
    END IF;
    FOREACH part IN ARRAY string_to_array(field, ',') LOOP
        m := regexp_match(part, '^(\*|([0-9]+)(-([0-9]+))?)(/([0-9]+))?$');
        IF m IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'invalid cron field ' || quote_literal(field)
                          || ' (expected *, numbers, ranges a-b and steps /n)';
        END IF;
        step := coalesce(m[6]::integer, 1);
        IF m[1] = '*' THEN
            a := lo;
            b := hi;
        ELSE
            a := m[2]::integer;
            -- a bare number with a step (5/15) runs from the number to the end of the range
            b := coalesce(m[4]::integer, CASE WHEN m[6] IS NULL THEN a ELSE hi END);
        END IF;
        IF step < 1 OR a < lo OR b > hi OR a > b THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'cron field ' || quote_literal(field) || ' is out of range '
                          || lo || '-' || hi || ' or has a zero step or a reversed range';
        END IF;
        vals := vals || ARRAY(SELECT generate_series(a, b, step));
    END LOOP;
    vals := ARRAY(SELECT DISTINCT v FROM unnest(vals) AS v ORDER BY v);
    IF cardinality(vals) = hi - lo + 1 THEN
        RETURN NULL;  -- allows every value: the same as '*', as in normalize_cron
    END IF;
    RETURN vals;
END
$$;

COMMENT ON FUNCTION vowvault_cron_field(text, integer, integer) IS
'Expands one cron field into the sorted array of the values it allows within lo..hi. '
'NULL means unrestricted: the field is * or allows every value of the range (as '
'vowvault.scheduling.normalize_cron, which writes such fields as *). Accepts numbers, '
'ranges a-b, comma lists and steps (*/s, a-b/s, a/s); names (MON, JAN) are not accepted, '
'the catalog stores the canonical numeric form. Raises invalid_parameter_value otherwise.';

CREATE OR REPLACE FUNCTION vowvault_cron_parse(
    cron text,
    OUT minutes integer[], OUT hours integer[], OUT doms integer[],
    OUT months integer[], OUT dows integer[])
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    expr text := btrim(regexp_replace(cron, '\s+', ' ', 'g'));
    f text[];
BEGIN
    expr := CASE lower(expr)
        WHEN '@yearly' THEN '0 0 1 1 *'
        WHEN '@annually' THEN '0 0 1 1 *'
        WHEN '@monthly' THEN '0 0 1 * *'
        WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@daily' THEN '0 0 * * *'
        WHEN '@midnight' THEN '0 0 * * *'
        WHEN '@hourly' THEN '0 * * * *'
        ELSE expr END;
    f := string_to_array(expr, ' ');
    IF cardinality(f) IS DISTINCT FROM 5 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'cron ' || quote_literal(cron) || ' must have 5 fields (minute hour '
                      || 'day-of-month month day-of-week)';
    END IF;
    minutes := vowvault_cron_field(f[1], 0, 59);
    hours := vowvault_cron_field(f[2], 0, 23);
    doms := vowvault_cron_field(f[3], 1, 31);
    months := vowvault_cron_field(f[4], 1, 12);
    dows := vowvault_cron_field(f[5], 0, 7);
    IF dows IS NOT NULL THEN
        -- 7 is another name for Sunday (0)
        dows := ARRAY(SELECT DISTINCT mod(v, 7) FROM unnest(dows) AS v ORDER BY 1);
        IF cardinality(dows) = 7 THEN
            dows := NULL;
        END IF;
    END IF;
END
$$;

COMMENT ON FUNCTION vowvault_cron_parse(text) IS
'Splits a 5-field cron expression (or @daily-style macro) into the arrays of allowed '
'minutes, hours, days of month, months and days of week (0 = Sunday, 7 folded into 0); '
'a NULL array means the field is unrestricted (see vowvault_cron_field).';

CREATE OR REPLACE FUNCTION vowvault_cron_day_matches(
    d date, doms integer[], months integer[], dows integer[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (months IS NULL OR extract(month FROM d)::integer = ANY (months))
       AND CASE
             WHEN doms IS NOT NULL AND dows IS NOT NULL
               THEN extract(day FROM d)::integer = ANY (doms)
                    OR extract(dow FROM d)::integer = ANY (dows)
             ELSE (doms IS NULL OR extract(day FROM d)::integer = ANY (doms))
                  AND (dows IS NULL OR extract(dow FROM d)::integer = ANY (dows))
           END
$$;

COMMENT ON FUNCTION vowvault_cron_day_matches(date, integer[], integer[], integer[]) IS
'Whether cron fires on calendar day d: its month must be allowed, and day-of-month and '
'day-of-week are OR-ed when both are restricted (Vixie cron), AND-ed otherwise (so when '
'either is unrestricted only the other one restricts). NULL arrays are unrestricted; '
'day of week 0 is Sunday.';

-- ---------------------------------------------------------------------------------------
-- Fire times of one cron expression in a timezone
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION vowvault_cron_next(cron text, tz text, after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    margin constant interval := interval '3 hours';
    p record;
    mins integer[];
    hrs integer[];
    start_local timestamp;
    d date;
    last_day date;
    h integer;
    mi integer;
    l timestamp;
    inst timestamptz;
    best timestamptz;
    best_local timestamp;
BEGIN
    IF NOT isfinite(after) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO p FROM vowvault_cron_parse(cron);
    mins := coalesce(p.minutes, ARRAY(SELECT generate_series(0, 59)));
    hrs := coalesce(p.hours, ARRAY(SELECT generate_series(0, 23)));
    -- Wall-clock fire times strictly after this one are examined, in order (the Python
    -- version walks croniter from the same point).
    start_local := date_trunc('minute', after AT TIME ZONE tz) - margin;
    d := start_local::date;
    last_day := d + 3700;  -- about ten years: enough for Feb 29 (at most 8 years apart)
    WHILE d <= last_day LOOP
        IF p.months IS NOT NULL AND NOT (extract(month FROM d)::integer = ANY (p.months)) THEN
            d := (date_trunc('month', d) + interval '1 month')::date;
            CONTINUE;
        END IF;
        IF best_local IS NOT NULL AND d > best_local + margin THEN
            RETURN best;
        END IF;
        IF vowvault_cron_day_matches(d, p.doms, p.months, p.dows) THEN
            FOREACH h IN ARRAY hrs LOOP
                CONTINUE WHEN d + make_time(h, 59, 0) <= start_local;
                FOREACH mi IN ARRAY mins LOOP
                    l := d + make_time(h, mi, 0);
                    CONTINUE WHEN l <= start_local;
                    IF best_local IS NOT NULL AND l > best_local + margin THEN
                        -- a wall-clock time this much later cannot be an earlier instant
                        RETURN best;
                    END IF;
                    inst := l AT TIME ZONE tz;
                    IF inst > after AND (best IS NULL OR inst < best) THEN
                        best := inst;
                        best_local := l;
                    END IF;
                END LOOP;
            END LOOP;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN best;
END
$$;

COMMENT ON FUNCTION vowvault_cron_next(text, text, timestamptz) IS
'The first instant strictly after "after" at which cron fires in timezone tz (Python '
'vowvault.scheduling.next_fire): the smallest (L AT TIME ZONE tz) greater than "after" '
'over wall-clock fire times L, searched from the wall clock of "after" (truncated to the '
'minute) minus 3 hours until L passes the best candidate''s wall clock plus 3 hours. '
'Nonexistent wall-clock times use the offset before the change; repeated ones fire at '
'their second (standard-time) occurrence. NULL when nothing fires within about ten years. '
'IMMUTABLE like AT TIME ZONE itself (it depends on the timezone database).';

CREATE OR REPLACE FUNCTION vowvault_cron_fires(
    cron text, tz text, start_at timestamptz, end_at timestamptz)
RETURNS SETOF timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    WITH p AS (
        SELECT * FROM vowvault_cron_parse(cron)
    ), w AS (
        SELECT date_trunc('minute', start_at AT TIME ZONE tz) - interval '3 hours' AS lo,
               (end_at AT TIME ZONE tz) + interval '3 hours' AS hi
        WHERE isfinite(start_at) AND isfinite(end_at)
    ), days AS (
        SELECT g::date AS d
        FROM w, p, generate_series(w.lo::date::timestamp, w.hi, interval '1 day') AS g
        WHERE vowvault_cron_day_matches(g::date, p.doms, p.months, p.dows)
    ), local_fires AS (
        SELECT days.d + make_time(h, mi, 0) AS l
        FROM p, days,
             unnest(coalesce(p.hours, ARRAY(SELECT generate_series(0, 23)))) AS h,
             unnest(coalesce(p.minutes, ARRAY(SELECT generate_series(0, 59)))) AS mi
    ), instants AS (
        SELECT f.l AT TIME ZONE tz AS instant
        FROM local_fires AS f, w
        WHERE f.l > w.lo AND f.l <= w.hi
    )
    SELECT DISTINCT i.instant
    FROM instants AS i
    WHERE i.instant > start_at AND i.instant <= end_at
    ORDER BY i.instant
$$;

COMMENT ON FUNCTION vowvault_cron_fires(text, text, timestamptz, timestamptz) IS
'The distinct instants in (start_at, end_at] at which cron fires in timezone tz, in order '
'(Python vowvault.scheduling.fires_between): wall-clock fire times L after the wall clock '
'of start_at (truncated to the minute) minus 3 hours and up to the wall clock of end_at '
'plus 3 hours, mapped with (L AT TIME ZONE tz). Two wall-clock times that denote the same '
'instant (around a forward change) count once.';

-- ---------------------------------------------------------------------------------------
-- Policies
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION calculate_next_backup_time(
    policy_id uuid, from_time timestamptz DEFAULT now())
RETURNS timestamptz
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT min(vowvault_cron_next(s.cron, p.timezone, calculate_next_backup_time.from_time))
    FROM backup_policies AS p
    CROSS JOIN LATERAL jsonb_array_elements_text(p.effective_schedules) AS s(cron)
    WHERE p.id = calculate_next_backup_time.policy_id
      AND p.is_active
$$;

COMMENT ON FUNCTION calculate_next_backup_time(uuid, timestamptz) IS
'The next run of a policy strictly after from_time: the earliest vowvault_cron_next over '
'its effective_schedules (peak season included) in its timezone (Python '
'vowvault.scheduling.next_run). NULL when the policy does not exist, is inactive '
'(is_active false: it will not run), or none of its schedules fires within ten years.';

CREATE OR REPLACE FUNCTION backup_priority_at(
    policy_id uuid, at_time timestamptz DEFAULT now())
RETURNS backup_priority
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE
             WHEN NOT p.wedding_day_priority THEN p.priority
             WHEN NOT (extract(isodow FROM x.local_day) = 6
                       OR EXISTS (SELECT 1
                                  FROM wedding_calendar AS w
                                  WHERE w.organization_id = p.organization_id
                                    AND w.wedding_date = x.local_day))
               THEN p.priority
             WHEN p.priority = 'LOW' THEN 'NORMAL'::backup_priority
             WHEN p.priority = 'NORMAL' THEN 'HIGH'::backup_priority
             WHEN p.priority = 'HIGH' THEN 'CRITICAL'::backup_priority
             ELSE p.priority  -- CRITICAL stays, EMERGENCY is only declared by people
           END
    FROM backup_policies AS p
    CROSS JOIN LATERAL (
        SELECT (backup_priority_at.at_time AT TIME ZONE p.timezone)::date AS local_day
    ) AS x
    WHERE p.id = backup_priority_at.policy_id
$$;

COMMENT ON FUNCTION backup_priority_at(uuid, timestamptz) IS
'The priority of a run of the policy at at_time (Python '
'vowvault.scheduling.effective_priority): when wedding_day_priority is set and the local '
'date of at_time in the policy''s timezone is a wedding day (a Saturday, or a '
'wedding_calendar date of the policy''s organization), the base priority is raised one '
'level, up to CRITICAL; CRITICAL and EMERGENCY are kept. NULL when the policy does not '
'exist; is_active is not consulted.';

CREATE OR REPLACE FUNCTION vowvault_expected_runs(
    policy_id uuid, start_at timestamptz, end_at timestamptz)
RETURNS integer
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT (SELECT count(DISTINCT f.instant)::integer
            FROM jsonb_array_elements_text(p.effective_schedules) AS s(cron)
            CROSS JOIN LATERAL vowvault_cron_fires(
                s.cron, p.timezone,
                vowvault_expected_runs.start_at, vowvault_expected_runs.end_at) AS f(instant))
    FROM backup_policies AS p
    WHERE p.id = vowvault_expected_runs.policy_id
$$;

COMMENT ON FUNCTION vowvault_expected_runs(uuid, timestamptz, timestamptz) IS
'How many runs the policy''s effective_schedules promise in (start_at, end_at]: distinct '
'instants over all its schedules in its timezone (Python '
'vowvault.scheduling.expected_runs). NULL when the policy does not exist; is_active is not '
'consulted (callers such as check_backup_compliance pick the active policies).';

CREATE OR REPLACE FUNCTION check_backup_compliance(
    days_back integer DEFAULT 7, as_of timestamptz DEFAULT now())
RETURNS TABLE(policy_name varchar, compliance_percentage numeric)
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT p.name::varchar,
           CASE WHEN e.expected = 0 THEN 100.00
                ELSE round(least(a.actual, e.expected) * 100.0 / e.expected, 2)
           END
    FROM backup_policies AS p
    CROSS JOIN LATERAL (
        SELECT check_backup_compliance.as_of
               - make_interval(days => check_backup_compliance.days_back) AS window_start
    ) AS w
    CROSS JOIN LATERAL (
        SELECT vowvault_expected_runs(p.id, w.window_start, check_backup_compliance.as_of)
               AS expected
    ) AS e
    CROSS JOIN LATERAL (
        SELECT count(*) AS actual
        FROM backup_jobs AS j
        WHERE j.policy_id = p.id
          AND j.status = 'COMPLETED'
          AND j.completed_at > w.window_start
          AND j.completed_at <= check_backup_compliance.as_of
    ) AS a
    WHERE p.is_active
    ORDER BY p.name
$$;

COMMENT ON FUNCTION check_backup_compliance(integer, timestamptz) IS
'For every active policy, the share of the runs its schedules promised in the window '
'(as_of - days_back days, as_of] that have a COMPLETED backup job completed in that '
'window: round(least(actual, expected) * 100 / expected, 2), and 100.00 when nothing was '
'expected. expected is vowvault_expected_runs; extra completed jobs do not count above '
'100. as_of defaults to now(); give it to evaluate a fixed window.';
