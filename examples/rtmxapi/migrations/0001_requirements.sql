-- The requirements of RTMX's database.csv, one row per requirement, with
-- a version for optimistic concurrency. tenant_id is filled in and
-- enforced by store (default and row level security).
CREATE TABLE requirements (
    tenant_id text NOT NULL,
    req_id text NOT NULL CHECK (req_id ~ '^REQ-[A-Z]+-[0-9]+$'),
    category text NOT NULL,
    subcategory text NOT NULL DEFAULT '',
    requirement_text text NOT NULL,
    target_value text NOT NULL DEFAULT '',
    test_module text NOT NULL DEFAULT '',
    test_function text NOT NULL DEFAULT '',
    validation_method text NOT NULL DEFAULT '',
    status text NOT NULL CHECK (status IN ('COMPLETE', 'PARTIAL', 'MISSING', 'NOT_STARTED')),
    priority text NOT NULL DEFAULT 'MEDIUM' CHECK (priority IN ('P0', 'HIGH', 'MEDIUM', 'LOW')),
    phase integer CHECK (phase BETWEEN 0 AND 9999),
    notes text NOT NULL DEFAULT '',
    effort_weeks double precision CHECK (effort_weeks BETWEEN 0 AND 1000),
    dependencies text[] NOT NULL DEFAULT '{}',
    blocks text[] NOT NULL DEFAULT '{}',
    assignee text NOT NULL DEFAULT '',
    sprint text NOT NULL DEFAULT '',
    started_date date,
    completed_date date,
    requirement_file text NOT NULL DEFAULT '',
    external_id text NOT NULL DEFAULT '',
    version bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, req_id)
);
