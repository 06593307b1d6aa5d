-- +goose NO TRANSACTION
-- +goose Up
-- Distinct mini programs seen in the month's events (from the merged sketches' names, exact up
-- to pkg/sketch.MaxMiniPrograms): the entitlement report compares it with the plan's limit.
ALTER TABLE mau_rollups ADD COLUMN IF NOT EXISTS mini_programs UInt32 DEFAULT 0 AFTER mau_by_app;

-- The rater's output: one invoice per rated rollup version of a tenant-month. The invoice id
-- derives from (tenant, month, rollup version), so rating a rollup twice writes nothing new (the
-- rater skips an invoice that exists; ReplacingMergeTree folds a copy written by a crash between
-- insert and offset commit). Every figure needed to check the bill is on the row: the usage, the
-- plan and its validity, the price, the HLL cross-check and the SQL reproducing the MAU.
-- A restated rollup gets its own invoice whose adjustment_cents is its amount minus the amount of
-- the latest earlier invoice of the month: what the next bill charges (or credits).
CREATE TABLE IF NOT EXISTS invoices
(
    invoice_id               String COMMENT 'inv_ + hex of SHA-256(tenant NUL month NUL version), first 80 bits',
    tenant_id                LowCardinality(String),
    month                    LowCardinality(String) COMMENT 'billing month YYYY-MM in the tenant time zone',
    rollup_version           UInt32,
    rollup_kind              Enum8('close' = 1, 'restatement' = 2),
    plan                     LowCardinality(String) COMMENT 'plan in force on the last day of the month; empty when none',
    plan_purchased           String COMMENT 'YYYY-MM-DD; empty when no plan',
    plan_valid_until         String COMMENT 'YYYY-MM-DD, the anniversary; empty when no plan',
    contract                 Bool COMMENT 'a contract override priced the month',
    mau                      UInt64 COMMENT 'billable MAU',
    testing_mau              UInt64,
    total_mau                UInt64 COMMENT 'all apps: the rollup MAU',
    mau_by_app               Map(String, UInt64),
    billable_apps            Array(String) COMMENT 'the apps whose devices are billed',
    included_mau             UInt64,
    overage_mau              UInt64,
    unit_price_usd           String COMMENT 'exact decimal, USD per MAU',
    amount_usd               Decimal(20, 2) COMMENT 'rounded half-up to cents once',
    flags                    Array(LowCardinality(String)),
    entitlements             String COMMENT 'JSON: apps and mini programs seen against the plan limits',
    previous_invoice_id      String COMMENT 'the latest earlier invoice of the month; empty for the first',
    previous_rollup_version  UInt32,
    previous_amount_usd      Decimal(20, 2),
    adjustment_usd           Decimal(20, 2) COMMENT 'amount_usd - previous_amount_usd; 0 for the first invoice',
    hll_estimate             UInt64,
    hll_relative_error       Float64,
    hll_agrees               Bool COMMENT 'HLL estimate within 3 standard errors (+3) of the exact total MAU',
    devices_through          DateTime64(3, 'UTC') COMMENT 'the rollup covers mau_devices rows inserted up to here',
    mau_sql                  String COMMENT 'reproduces mau from mau_devices',
    rated_at                 DateTime64(3, 'UTC'),
    due_by                   DateTime64(3, 'UTC') COMMENT 'end of day 3 of the next month in the tenant time zone'
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant_id, month, rollup_version);

-- +goose Down
DROP TABLE IF EXISTS invoices;
ALTER TABLE mau_rollups DROP COLUMN IF EXISTS mini_programs;
