package chstore

import (
	"context"
	"fmt"

	"github.com/maumeter/maumeter/pkg/event"
)

// DeviceCounts is the exact number of devices (uniqExact over mau_devices) of every month not
// before fromMonth (YYYY-MM) of the given tenants that has any. The POC cap publisher asks it
// every second: mau_devices is ordered by (tenant_id, month, device_key), so it reads only the
// rows of those tenant-months.
func (s *Store) DeviceCounts(ctx context.Context, tenants []string, fromMonth string) (map[TenantMonth]uint64, error) {
	out := map[TenantMonth]uint64{}
	if len(tenants) == 0 {
		return out, nil
	}
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, month, uniqExact(device_key) FROM mau_devices
		WHERE tenant_id IN ? AND month >= ? GROUP BY tenant_id, month`, tenants, fromMonth)
	if err != nil {
		return nil, fmt.Errorf("device counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tm TenantMonth
		var n uint64
		if err := rows.Scan(&tm.TenantID, &tm.Month, &n); err != nil {
			return nil, fmt.Errorf("device counts: scan: %w", err)
		}
		out[tm] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("device counts: %w", err)
	}
	return out, nil
}

// DeviceKeys lists the distinct device keys of a tenant-month, first seen first, at most limit
// of them.
func (s *Store) DeviceKeys(ctx context.Context, tm TenantMonth, limit int) ([]event.DeviceKey, error) {
	rows, err := s.conn.Query(ctx, `SELECT device_key FROM mau_devices WHERE tenant_id = ? AND month = ?
		GROUP BY device_key ORDER BY min(first_seen_at), device_key LIMIT ?`, tm.TenantID, tm.Month, uint64(limit))
	if err != nil {
		return nil, fmt.Errorf("device keys %s %s: %w", tm.TenantID, tm.Month, err)
	}
	defer rows.Close()
	var out []event.DeviceKey
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("device keys %s %s: scan: %w", tm.TenantID, tm.Month, err)
		}
		var dk event.DeviceKey
		copy(dk[:], k)
		out = append(out, dk)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("device keys %s %s: %w", tm.TenantID, tm.Month, err)
	}
	return out, nil
}
