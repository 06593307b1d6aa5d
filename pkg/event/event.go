// Package event is the event contract v1 of maumeter: the JSON that super-app SDKs send, its
// validation with machine-readable rejection reasons, the device key that MAU is counted over,
// and the compact binary encoding carried on Kafka.
//
// The package does no I/O and keeps no state; everything in it is safe for concurrent use.
package event

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Type is one of the three events that make a GUID count as a monthly active user.
type Type uint8

// The event types of the billing overview. Zero is invalid on purpose.
const (
	Search      Type = 1
	PreDownload Type = 2
	Open        Type = 3
)

var typeNames = [...]string{Search: "search", PreDownload: "pre_download", Open: "open"}

func (t Type) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Valid reports whether t is one of the counted event types.
func (t Type) Valid() bool { return t >= Search && t <= Open }

// ParseType maps the JSON name of an event type to its Type.
func ParseType(s string) (Type, bool) {
	switch s {
	case "search":
		return Search, true
	case "pre_download":
		return PreDownload, true
	case "open":
		return Open, true
	}
	return 0, false
}

// Event is one validated SDK event.
type Event struct {
	EventID       string // optional, for raw-event dedupe
	TenantID      string
	AppID         string
	GUID          string // generated per app per device: the unit MAU counts
	Type          Type
	MiniProgramID string // required for pre_download and open
	TS            time.Time
}

// DeviceKey identifies a device-app within a tenant: the first 128 bits of
// SHA-256(tenant_id NUL app_id NUL guid). 128 bits because a 64-bit hash collides with
// probability 2.7e-4 at 100M devices, too high for billing. Tenant and app ids cannot hold NUL,
// so the encoding is unambiguous.
type DeviceKey [16]byte

// Key returns the device key of e.
func (e *Event) Key() DeviceKey { return KeyOf(e.TenantID, e.AppID, e.GUID) }

// KeyOf returns the device key of a (tenant, app, guid).
func KeyOf(tenant, app, guid string) DeviceKey {
	buf := make([]byte, 0, len(tenant)+len(app)+len(guid)+2)
	buf = append(buf, tenant...)
	buf = append(buf, 0)
	buf = append(buf, app...)
	buf = append(buf, 0)
	buf = append(buf, guid...)
	sum := sha256.Sum256(buf)
	var k DeviceKey
	copy(k[:], sum[:16])
	return k
}

func (k DeviceKey) String() string { return hex.EncodeToString(k[:]) }

// PartitionKey is the Kafka message key of e: tenant/app/guid. Every event of one device-app
// lands on one partition, so per-partition device sets never overlap. Tenant and app ids cannot
// hold '/', so the key is unambiguous even when the GUID does.
func (e *Event) PartitionKey() []byte {
	b := make([]byte, 0, len(e.TenantID)+len(e.AppID)+len(e.GUID)+2)
	b = append(b, e.TenantID...)
	b = append(b, '/')
	b = append(b, e.AppID...)
	b = append(b, '/')
	b = append(b, e.GUID...)
	return b
}
