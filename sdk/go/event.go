package maumeter

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// EventType is one of the three events of a mini program the platform counts.
type EventType string

// The event types of the event contract v1.
const (
	Search      EventType = "search"       // the mini program appeared in a search
	PreDownload EventType = "pre_download" // its package was fetched ahead of opening
	Open        EventType = "open"         // it was opened
)

// Event is one event of a device. A device (GUID) active in a month counts once in that month's
// MAU of its tenant and app, whatever the events.
type Event struct {
	// ID identifies the event across retries; Track sets a UUIDv7 when it is empty. The gateway
	// and the archive fold duplicates of one ID.
	ID       string
	TenantID string
	AppID    string
	// GUID identifies the device for this app: the id the super app assigns per app and per
	// device (a reinstall that gets a new GUID is a new device).
	GUID          string
	Type          EventType
	MiniProgramID string // required for PreDownload and Open
	Time          time.Time
}

// wireEvent is an Event as schemas/openapi.yaml's Event.
type wireEvent struct {
	EventID       string `json:"event_id,omitempty"`
	TenantID      string `json:"tenant_id"`
	AppID         string `json:"app_id"`
	GUID          string `json:"guid"`
	Event         string `json:"event"`
	MiniProgramID string `json:"mini_program_id,omitempty"`
	TS            string `json:"ts"`
}

func (e Event) wire() wireEvent {
	return wireEvent{EventID: e.ID, TenantID: e.TenantID, AppID: e.AppID, GUID: e.GUID, Event: string(e.Type),
		MiniProgramID: e.MiniProgramID, TS: e.Time.UTC().Format(time.RFC3339Nano)}
}

func (w wireEvent) event() Event {
	ts, _ := time.Parse(time.RFC3339Nano, w.TS)
	return Event{ID: w.EventID, TenantID: w.TenantID, AppID: w.AppID, GUID: w.GUID, Type: EventType(w.Event),
		MiniProgramID: w.MiniProgramID, Time: ts}
}

// ErrInvalidEvent wraps the reasons Track refuses an event before queueing it (the gateway
// would reject it with missing_field or bad_event_type).
var ErrInvalidEvent = errors.New("maumeter: invalid event")

func (e Event) validate() error {
	switch {
	case e.TenantID == "":
		return fmt.Errorf("%w: tenant_id is empty", ErrInvalidEvent)
	case e.AppID == "":
		return fmt.Errorf("%w: app_id is empty", ErrInvalidEvent)
	case e.GUID == "":
		return fmt.Errorf("%w: guid is empty", ErrInvalidEvent)
	case e.Time.IsZero():
		return fmt.Errorf("%w: ts is zero", ErrInvalidEvent)
	}
	switch e.Type {
	case Search:
	case PreDownload, Open:
		if e.MiniProgramID == "" {
			return fmt.Errorf("%w: mini_program_id is required for %s", ErrInvalidEvent, e.Type)
		}
	default:
		return fmt.Errorf("%w: event type %q is not search, pre_download or open", ErrInvalidEvent, e.Type)
	}
	return nil
}

// NewEventID returns a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, so
// ids sort by creation time.
func NewEventID() string {
	var u [16]byte
	if _, err := rand.Read(u[6:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	ms := uint64(time.Now().UnixMilli())
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], ms<<16)
	copy(u[:6], t[:6])
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // variant 10
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}
