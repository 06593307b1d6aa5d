-- +goose NO TRANSACTION
-- +goose Up
-- Parameterized views for analysts (docs/ANALYST.md). Each reads the billing record
-- (mau_devices, exact) or the archive (events FINAL: each event once), never a sketch. Days are
-- the tenant's billing days: pass its IANA zone as tz. Call them like tables:
--   SELECT * FROM analyst_cumulative_mau(tenant = 'acme', month = '2026-11', tz = 'Asia/Shanghai')

-- Devices first seen per day of a tenant-month, and the month's MAU so far at the end of each day.
CREATE VIEW IF NOT EXISTS analyst_cumulative_mau AS
SELECT day, new_devices, sum(new_devices) OVER (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cumulative_mau
FROM (
    SELECT toDate(first, {tz:String}) AS day, count() AS new_devices
    FROM (
        SELECT device_key, min(first_seen_at) AS first
        FROM mau_devices
        WHERE tenant_id = {tenant:String} AND month = {month:String}
        GROUP BY device_key
    )
    GROUP BY day
)
ORDER BY day;

-- Devices first seen per day and app.
CREATE VIEW IF NOT EXISTS analyst_first_seen_daily AS
SELECT toDate(first, {tz:String}) AS day, app_id, count() AS new_devices
FROM (
    SELECT app_id, device_key, min(first_seen_at) AS first
    FROM mau_devices
    WHERE tenant_id = {tenant:String} AND month = {month:String}
    GROUP BY app_id, device_key
)
GROUP BY day, app_id
ORDER BY day, app_id;

-- Exact MAU per app of a tenant-month (the billed figure's parts).
CREATE VIEW IF NOT EXISTS analyst_app_mau AS
SELECT app_id, uniqExact(device_key) AS mau
FROM mau_devices
WHERE tenant_id = {tenant:String} AND month = {month:String}
GROUP BY app_id
ORDER BY app_id;

-- Daily active devices (any event that day) of a tenant-month, from the archive.
CREATE VIEW IF NOT EXISTS analyst_dau AS
SELECT toDate(ts, {tz:String}) AS day, uniqExact(device_key) AS dau, count() AS events
FROM events FINAL
WHERE tenant_id = {tenant:String} AND month = {month:String}
GROUP BY day
ORDER BY day;

-- Devices and events per mini program of a tenant-month, exact, from the archive (search events
-- name no mini program and are left out).
CREATE VIEW IF NOT EXISTS analyst_mini_program_mau AS
SELECT mini_program_id, uniqExact(device_key) AS devices, count() AS events
FROM events FINAL
WHERE tenant_id = {tenant:String} AND month = {month:String} AND mini_program_id != ''
GROUP BY mini_program_id
ORDER BY devices DESC, mini_program_id;

-- A dispute: every archived event of one device (tenant, app, guid) in a month, oldest first,
-- and whether it is the sighting mau_devices bills it by.
CREATE VIEW IF NOT EXISTS analyst_device_events AS
SELECT e.ts AS ts, e.event AS event, e.mini_program_id AS mini_program_id, e.event_id AS event_id,
    e.kafka_partition AS kafka_partition, e.kafka_offset AS kafka_offset,
    toBool((e.kafka_partition, e.kafka_offset) IN (
        SELECT kafka_partition, kafka_offset FROM mau_devices
        WHERE tenant_id = {tenant:String} AND month = {month:String} AND app_id = {app:String} AND guid = {guid:String}
    )) AS billed_sighting
FROM events AS e FINAL
WHERE e.tenant_id = {tenant:String} AND e.month = {month:String} AND e.app_id = {app:String} AND e.guid = {guid:String}
ORDER BY ts, kafka_offset;

-- +goose Down
DROP VIEW IF EXISTS analyst_device_events;
DROP VIEW IF EXISTS analyst_mini_program_mau;
DROP VIEW IF EXISTS analyst_dau;
DROP VIEW IF EXISTS analyst_app_mau;
DROP VIEW IF EXISTS analyst_first_seen_daily;
DROP VIEW IF EXISTS analyst_cumulative_mau;
