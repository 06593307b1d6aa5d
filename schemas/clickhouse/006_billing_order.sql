-- +goose NO TRANSACTION
-- +goose Up
-- Billing order (docs/ARCHITECTURE.md, "Billing order"; pipeline/chstore/billing.go).
--
-- Each invoice of a tenant-month takes the next billing_seq of the month by a conditional insert
-- (insert_deduplication_token = invoices/<tenant>/<month>/<seq>, async_insert = 0, then a
-- read-back of writer_id), and charges what the month's earlier invoices have not billed yet:
--   billed_before_usd = the sum of the charges of the invoices before it in billing order
--   charge_usd        = amount_usd for the first, amount_usd - billed_before_usd for a rollup
--                       version newer than every version rated before it, 0 for an older one
--                       (flag stale_version, superseded_by_version = the newest version before it)
-- so the charges of a month add up to its newest version's amount in any order of rating.
-- adjustment_usd is charge_usd for every invoice but the first (0).
ALTER TABLE invoices
    ADD COLUMN IF NOT EXISTS billing_seq UInt32 COMMENT 'position in the month''s billing order, 1 = first rated',
    ADD COLUMN IF NOT EXISTS billed_before_usd Decimal(20, 2) COMMENT 'sum of charge_usd of the month''s earlier invoices in billing order',
    ADD COLUMN IF NOT EXISTS charge_usd Decimal(20, 2) COMMENT 'what this invoice charges: the amount (first), the adjustment (newer version) or 0 (stale)',
    ADD COLUMN IF NOT EXISTS superseded_by_version UInt32 COMMENT 'stale_version: the newest rollup version rated before it, else 0',
    ADD COLUMN IF NOT EXISTS writer_id String COMMENT 'random id of the rating that wrote the row, for the conditional insert''s read-back';

ALTER TABLE invoices
    COMMENT COLUMN previous_invoice_id 'the newest rollup version invoiced before this one in billing order, empty for the first',
    COMMENT COLUMN previous_amount_usd 'amount_usd of previous_invoice_id',
    COMMENT COLUMN adjustment_usd 'charge_usd of an invoice after the first, 0 for the first';

-- Existing invoices: placed in billing order by rated_at (then version) and re-charged by the
-- rule above. Before 006 an invoice adjusted against the latest earlier *version*, so a version
-- rated after a newer one was charged again (v1 150, v3 300: +150, v2 450: +300, so 600 billed
-- where v3's 300 is due): here it becomes stale with no charge, and every month's charges add up
-- to the amount of its newest version, which is what its statement showed as the month's
-- amount. Rows are re-inserted under their key (ReplacingMergeTree keeps the last insert); the
-- statement is idempotent, and `SELECT * EXCEPT … REPLACE …` carries every other column as it
-- is, whatever other migrations added to the table.
INSERT INTO invoices
SELECT * EXCEPT (o_seq, o_newest_version, o_newest_amount, o_newest_id, o_stale) REPLACE (
    if(o_stale, arraySort(arrayDistinct(arrayPushBack(flags, 'stale_version'))), flags) AS flags,
    if(o_seq = 1, '', o_newest_id) AS previous_invoice_id,
    if(o_seq = 1, 0, o_newest_version) AS previous_rollup_version,
    if(o_seq = 1, toDecimal64(0, 2), o_newest_amount) AS previous_amount_usd,
    if(o_seq = 1 OR o_stale, toDecimal64(0, 2), amount_usd - o_newest_amount) AS adjustment_usd,
    o_seq AS billing_seq,
    o_newest_amount AS billed_before_usd,
    if(o_stale, toDecimal64(0, 2), amount_usd - o_newest_amount) AS charge_usd,
    if(o_stale, o_newest_version, 0) AS superseded_by_version,
    '006_migration' AS writer_id)
FROM
(
    SELECT *,
        row_number() OVER (PARTITION BY tenant_id, month ORDER BY rated_at, rollup_version) AS o_seq,
        max(rollup_version) OVER earlier AS o_newest_version,
        argMax(amount_usd, rollup_version) OVER earlier AS o_newest_amount,
        argMax(invoice_id, rollup_version) OVER earlier AS o_newest_id,
        rollup_version < o_newest_version AS o_stale
    FROM invoices FINAL
    WINDOW earlier AS (PARTITION BY tenant_id, month ORDER BY rated_at, rollup_version ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
);

OPTIMIZE TABLE invoices FINAL;

-- The conditional insert: ClickHouse remembers the tokens of the table's last 10,000 inserts and
-- drops a second insert under one of them (set after the re-insert above, which has no token).
ALTER TABLE invoices MODIFY SETTING non_replicated_deduplication_window = 10000;

-- Posted bills. A billing run (`maumeter rate --month M --post`) posts, for one tenant, every
-- invoice of months up to M that no earlier run posted: M's own invoices and the adjustments of
-- earlier months rated since the previous bill. run_seq is the tenant's posting order, taken by
-- the same conditional insert (token billing_runs/<tenant>/<run_seq>). posted_through records,
-- per invoice month on the bill, the highest billing_seq posted: a run's lines are the month's
-- invoices above the earlier runs' highest, up to it. Posting a month again returns its run.
CREATE TABLE IF NOT EXISTS billing_runs
(
    tenant_id      LowCardinality(String),
    run_seq        UInt32 COMMENT 'the tenant''s posting order, 1 first',
    bill_month     LowCardinality(String) COMMENT 'YYYY-MM whose bill this is',
    posted_through Map(String, UInt32) COMMENT 'invoice month -> highest billing_seq this run posted',
    invoice_ids    Array(String) COMMENT 'the posted invoices in (month, billing_seq) order',
    charged_usd    Decimal(20, 2) COMMENT 'sum of the posted invoices'' charge_usd',
    posted_at      DateTime64(3, 'UTC'),
    posted_by      LowCardinality(String) COMMENT 'maumeter rate --post, or 006_migration',
    writer_id      String COMMENT 'random id of the posting, for the conditional insert''s read-back'
)
ENGINE = MergeTree
ORDER BY (tenant_id, run_seq)
SETTINGS non_replicated_deduplication_window = 10000;

-- Invoices rated before 006 were billed by reading statements, with no record of it: each
-- existing month is recorded as posted on its own bill, with every invoice it has, so the first
-- billing run after the upgrade charges only what is rated from now on.
INSERT INTO billing_runs (tenant_id, run_seq, bill_month, posted_through, invoice_ids, charged_usd, posted_at, posted_by, writer_id)
SELECT tenant_id,
    toUInt32(row_number() OVER (PARTITION BY tenant_id ORDER BY month)),
    month,
    map(toString(month), max(billing_seq)),
    arrayMap(x -> x.2, arraySort(groupArray((billing_seq, invoice_id)))),
    sum(charge_usd),
    now64(3, 'UTC'),
    '006_migration',
    '006_migration'
FROM invoices FINAL
WHERE tenant_id NOT IN (SELECT tenant_id FROM billing_runs)
GROUP BY tenant_id, month;

-- +goose Down
DROP TABLE IF EXISTS billing_runs;
ALTER TABLE invoices RESET SETTING non_replicated_deduplication_window;
ALTER TABLE invoices
    DROP COLUMN IF EXISTS billing_seq,
    DROP COLUMN IF EXISTS billed_before_usd,
    DROP COLUMN IF EXISTS charge_usd,
    DROP COLUMN IF EXISTS superseded_by_version,
    DROP COLUMN IF EXISTS writer_id;
