-- +goose NO TRANSACTION
-- +goose Up
-- Exact MAU per tenant-month, for analysts. Reads mau_devices, so it is always exact.
CREATE VIEW IF NOT EXISTS mau_monthly AS
SELECT
    tenant_id,
    month,
    uniqExact(device_key) AS mau,
    min(first_seen_at)    AS first_device_at,
    max(first_seen_at)    AS last_new_device_at
FROM mau_devices
GROUP BY tenant_id, month;

-- +goose Down
DROP VIEW IF EXISTS mau_monthly;
