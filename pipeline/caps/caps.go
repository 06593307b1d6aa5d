// Package caps enforces the hard MAU caps of POC plans (poc_pro 200, poc_enterprise 500 devices
// per tenant-month, on every day a POC purchase and no paid one is in force: plan.Catalog.CapAt)
// at the ingest gateway without a database round trip per event.
//
// Two halves, joined by the compacted Kafka topic mau.caps.v1 (key tenant/month, JSON values with
// header schema=maumeter.caps.v1):
//
//   - Publisher runs in the one counter that owns partition 0 of the events topic, beside the
//     month closer. Every interval it reads from ClickHouse mau_devices the exact device count of
//     every tenant-month of the ingest window with a capped day and, when a count changed (and every Republish
//     interval anyway), publishes that tenant-month's Message: cap, count and the full list of
//     counted device keys.
//   - State runs in every gateway. It reads the topic from its first offset on every partition,
//     keeps the newest message of each tenant-month in memory and answers ingest.CapState from
//     memory. It also reserves a place for each new device it lets through, so that one gateway
//     never admits more devices than the cap allows between two messages.
//
// What the caps cannot prevent (docs/ARCHITECTURE.md, "POC caps"): N gateways that each admit new
// devices before the messages that include the others' arrive can together overshoot the cap by
// up to (N−1) × (cap − published count); events that bypass the gateway (maumeter import) are not
// capped at all. Devices beyond the cap are counted like any other; pricing (plan.Catalog.Price)
// flags the month poc_cap_exceeded and charges nothing for them.
//
// The package must not decide who is capped, on which days or at what: that is pkg/plan
// (Catalog.DailyCaps, CapAt, MonthCap).
package caps

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/event"
)

// Message is the cap state of one POC tenant-month: the value of key tenant/month on the caps
// topic. Its device list only grows within a month (mau_devices is insert-only), so a consumer
// may merge messages by union and keep the largest count, whatever order they arrive in.
type Message struct {
	TenantID string `json:"tenant_id"`
	Month    string `json:"month"`   // YYYY-MM in the tenant's billing zone
	Plan     string `json:"plan"`    // the hard-capped plan of the month's largest cap
	Cap      int64  `json:"cap"`     // the largest cap of the month's days (plan.Catalog.MonthCap) when published
	Devices  int64  `json:"devices"` // exact number of devices counted (uniqExact over mau_devices)
	Capped   bool   `json:"capped"`  // Devices >= Cap: no capped day of the month admits a new device
	// DeviceKeys are the counted device keys in hex, first seen first: all of them unless
	// Truncated (more than the publisher's MaxKeys, possible only after an import into the month).
	DeviceKeys []string `json:"device_keys"`
	Truncated  bool     `json:"truncated,omitempty"`
	// AsOf is when the publisher began reading mau_devices: every device flushed before it is in
	// the message.
	AsOf time.Time `json:"as_of"`
}

type tenantMonth = chstore.TenantMonth

// Key is the Kafka key of a tenant-month's message.
func Key(tm tenantMonth) string { return tm.TenantID + "/" + tm.Month }

func hexKeys(keys []event.DeviceKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.String()
	}
	return out
}

func parseKey(s string) (event.DeviceKey, error) {
	var k event.DeviceKey
	if hex.DecodedLen(len(s)) != len(k) {
		return k, fmt.Errorf("device key %q: want %d hex digits", s, 2*len(k))
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("device key %q: %w", s, err)
	}
	return k, nil
}
