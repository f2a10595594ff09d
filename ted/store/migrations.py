"""The database schema as numbered migrations.

Each migration runs once, in order, inside the transaction that records it in the
`migrations` table. An applied migration is never edited: a schema change is a new entry
at the end of `MIGRATIONS`.
"""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "libraries, experiences, versions, attempts",
        """
        CREATE TABLE libraries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            settings TEXT NOT NULL,
            student_model TEXT,
            teacher_model TEXT,
            version INTEGER NOT NULL DEFAULT 0,
            next_experience INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );

        CREATE TABLE experiences (
            library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
            id TEXT NOT NULL,
            ordinal INTEGER NOT NULL,
            text TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            usage_count INTEGER NOT NULL DEFAULT 0,
            helpful_count INTEGER NOT NULL DEFAULT 0,
            harmful_count INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired')),
            merged_into TEXT,
            provenance TEXT NOT NULL DEFAULT '{}',
            created_version INTEGER NOT NULL,
            PRIMARY KEY (library_id, id)
        );
        CREATE INDEX experiences_active ON experiences (library_id, state, ordinal);

        CREATE TABLE library_versions (
            library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            operations TEXT NOT NULL,
            snapshot TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (library_id, version)
        );

        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            task TEXT NOT NULL,
            images TEXT NOT NULL DEFAULT '[]',
            trajectory TEXT NOT NULL,
            answer TEXT,
            ground_truth TEXT,
            correct INTEGER,
            graded_by TEXT,
            cited TEXT NOT NULL DEFAULT '[]',
            counted TEXT NOT NULL DEFAULT '[]',
            model TEXT,
            library_version INTEGER NOT NULL,
            critiqued_at TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX attempts_by_task ON attempts (library_id, task_id);
        """,
    ),
    (
        "teacher solutions, model-call ledger, critiques",
        """
        CREATE TABLE teacher_solutions (
            task_key TEXT NOT NULL,
            teacher TEXT NOT NULL,
            task TEXT NOT NULL,
            ground_truth TEXT,
            solution TEXT NOT NULL,
            chain TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (task_key, teacher)
        );

        CREATE TABLE model_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            latency_ms INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            error TEXT,
            library TEXT,
            task_id TEXT,
            job_id TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX model_calls_by_job ON model_calls (job_id);

        CREATE TABLE critiques (
            id TEXT PRIMARY KEY,
            library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            teacher TEXT NOT NULL,
            attempt_ids TEXT NOT NULL,
            version INTEGER,
            reply TEXT NOT NULL,
            rejected TEXT NOT NULL DEFAULT '[]',
            created_at TEXT NOT NULL
        );

        ALTER TABLE attempts ADD COLUMN chain TEXT
        """,
    ),
    (
        "distillation jobs; attempts, critiques and model calls know their job",
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            library TEXT NOT NULL,
            params TEXT NOT NULL,
            dataset TEXT NOT NULL,
            problems TEXT NOT NULL,
            start_version INTEGER NOT NULL,
            problems_total INTEGER NOT NULL,
            problems_done INTEGER NOT NULL DEFAULT 0,
            epoch INTEGER NOT NULL DEFAULT 0,
            batch INTEGER NOT NULL DEFAULT 0,
            stats TEXT NOT NULL DEFAULT '[]',
            state TEXT NOT NULL,
            error TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            owner TEXT,
            lease_until TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );

        ALTER TABLE attempts ADD COLUMN job_id TEXT;
        ALTER TABLE attempts ADD COLUMN epoch INTEGER;
        ALTER TABLE attempts ADD COLUMN problem_id TEXT;
        ALTER TABLE attempts ADD COLUMN rollout INTEGER;
        CREATE UNIQUE INDEX attempts_by_rollout ON attempts (job_id, epoch, problem_id, rollout)
            WHERE job_id IS NOT NULL;

        ALTER TABLE critiques ADD COLUMN job_id TEXT;

        -- A job's calls remember their reply under a key, so a resumed job reuses what it paid for.
        ALTER TABLE model_calls ADD COLUMN call_key TEXT;
        ALTER TABLE model_calls ADD COLUMN reply TEXT;
        CREATE INDEX model_calls_by_key ON model_calls (job_id, call_key) WHERE call_key IS NOT NULL
        """,
    ),
    (
        "blind teacher solutions; settings and reasoning in the ledger; a job's configuration and solutions",
        """
        -- The cache held solutions made with the ground truth in view. It now holds the teacher's
        -- own (blind) solution and, when that was wrong, the one made knowing the answer. A cache
        -- is safe to empty: a solution is asked again when next needed.
        DELETE FROM teacher_solutions;
        ALTER TABLE teacher_solutions ADD COLUMN answer TEXT NOT NULL DEFAULT '';
        ALTER TABLE teacher_solutions ADD COLUMN informed TEXT;
        ALTER TABLE teacher_solutions ADD COLUMN chain_of TEXT;

        ALTER TABLE model_calls ADD COLUMN settings TEXT;
        ALTER TABLE model_calls ADD COLUMN reasoning TEXT;

        -- Which models and endpoints a job was started with, so that only a process configured
        -- the same way takes it over by itself.
        ALTER TABLE jobs ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
        -- The dataset's worked solutions by problem id: the teacher's reference, never the student's.
        ALTER TABLE jobs ADD COLUMN solutions TEXT NOT NULL DEFAULT '{}'
        """,
    ),
    (
        "the lesson gate: a guard model per library, quarantined lessons",
        """
        ALTER TABLE libraries ADD COLUMN guard_model TEXT;

        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
            text TEXT NOT NULL,
            reason TEXT NOT NULL,
            refused_by TEXT NOT NULL CHECK (refused_by IN ('rules', 'guard')),
            operation TEXT NOT NULL,
            source TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'rejected')),
            version INTEGER,
            created_at TEXT NOT NULL,
            decided_at TEXT
        );
        -- A lesson proposed again (a resumed batch replays its critique) is kept once.
        CREATE UNIQUE INDEX quarantine_pending ON quarantine (library_id, text) WHERE state = 'pending'
        """,
    ),
    (
        "served versions and their promotions, lessons' evidence, a job's validation set",
        """
        -- NULL: the library serves its working version (the newest), as every library did before.
        ALTER TABLE libraries ADD COLUMN served_version INTEGER;

        CREATE TABLE promotions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            decision TEXT NOT NULL CHECK (decision IN ('promoted', 'refused')),
            served_before INTEGER,
            by TEXT NOT NULL,
            reason TEXT NOT NULL,
            figures TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX promotions_by_library ON promotions (library_id, version);

        -- A lesson's measured effect (`ted evidence`) as JSON, naming the text it was measured on.
        ALTER TABLE experiences ADD COLUMN evidence TEXT;

        -- Problems held out to decide promotions, never trained on.
        ALTER TABLE jobs ADD COLUMN validation TEXT NOT NULL DEFAULT '[]'
        """,
    ),
    (
        "evaluation reports, kept so they can be listed and shown again",
        """
        CREATE TABLE evaluations (
            id TEXT PRIMARY KEY,
            library TEXT NOT NULL,
            library_version INTEGER NOT NULL,
            report TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX evaluations_by_time ON evaluations (created_at)
        """,
    ),
    (
        "prompt-cache tokens in the ledger; ledger totals kept as calls are recorded",
        """
        ALTER TABLE model_calls ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE model_calls ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;

        -- What `ted costs`, get_job and a job's cap checks read: one row per (job, library, role,
        -- model), kept by triggers in the transaction of every ledger row, so no read sums the
        -- ledger itself. '' stands for no job or no library (NULLs would make the key ambiguous).
        CREATE TABLE ledger_totals (
            job_id TEXT NOT NULL,
            library TEXT NOT NULL,
            role TEXT NOT NULL,
            model TEXT NOT NULL,
            calls INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            cost_usd REAL NOT NULL,
            unpriced INTEGER NOT NULL,
            latency_ms INTEGER NOT NULL,
            PRIMARY KEY (job_id, library, role, model)
        ) WITHOUT ROWID;
        CREATE INDEX ledger_totals_by_library ON ledger_totals (library);

        CREATE TRIGGER model_calls_add_to_totals AFTER INSERT ON model_calls BEGIN
            INSERT INTO ledger_totals VALUES (
                coalesce(new.job_id, ''), coalesce(new.library, ''), new.role, new.model, 1, 1 - new.ok,
                new.input_tokens, new.output_tokens, new.cache_read_tokens, new.cache_write_tokens,
                coalesce(new.cost_usd, 0), new.cost_usd IS NULL, new.latency_ms
            ) ON CONFLICT (job_id, library, role, model) DO UPDATE SET
                calls = calls + 1,
                failed = failed + excluded.failed,
                input_tokens = input_tokens + excluded.input_tokens,
                output_tokens = output_tokens + excluded.output_tokens,
                cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
                cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
                cost_usd = cost_usd + excluded.cost_usd,
                unpriced = unpriced + excluded.unpriced,
                latency_ms = latency_ms + excluded.latency_ms;
        END;

        CREATE TRIGGER model_calls_take_from_totals AFTER DELETE ON model_calls BEGIN
            UPDATE ledger_totals SET
                calls = calls - 1,
                failed = failed - (1 - old.ok),
                input_tokens = input_tokens - old.input_tokens,
                output_tokens = output_tokens - old.output_tokens,
                cache_read_tokens = cache_read_tokens - old.cache_read_tokens,
                cache_write_tokens = cache_write_tokens - old.cache_write_tokens,
                cost_usd = cost_usd - coalesce(old.cost_usd, 0),
                unpriced = unpriced - (old.cost_usd IS NULL),
                latency_ms = latency_ms - old.latency_ms
            WHERE job_id = coalesce(old.job_id, '') AND library = coalesce(old.library, '')
                AND role = old.role AND model = old.model;
            DELETE FROM ledger_totals WHERE calls = 0;
        END;

        INSERT INTO ledger_totals
            SELECT coalesce(job_id, ''), coalesce(library, ''), role, model, count(*), sum(1 - ok),
                sum(input_tokens), sum(output_tokens), 0, 0, coalesce(sum(cost_usd), 0),
                count(*) - count(cost_usd), sum(latency_ms)
            FROM model_calls GROUP BY 1, 2, 3, 4
        """,
    ),
    (
        "counts kept, not recounted: each version's lessons and tokens, each library's attempts",
        """
        -- Kept in the transactions that change them, so listing libraries reads them and counts
        -- nothing. A version's tokens need the tokenizer: versions written before this migration
        -- get theirs once, when the store opens (NULL until then).
        ALTER TABLE library_versions ADD COLUMN items INTEGER;
        ALTER TABLE library_versions ADD COLUMN tokens INTEGER;
        ALTER TABLE libraries ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
        UPDATE libraries SET attempts = (SELECT count(*) FROM attempts a WHERE a.library_id = libraries.id)
        """,
    ),
]
