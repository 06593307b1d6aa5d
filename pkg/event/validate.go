package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Reason is the machine-readable reason an event was rejected. The strings are part of the API.
type Reason string

// Rejection reasons of the event contract v1.
const (
	ReasonBadJSON        Reason = "bad_json"        // not a JSON object
	ReasonMissingField   Reason = "missing_field"   // a required field is absent or empty
	ReasonBadField       Reason = "bad_field"       // a field has the wrong type, length or characters
	ReasonBadEventType   Reason = "bad_event_type"  // event is not search, pre_download or open
	ReasonTSTooOld       Reason = "ts_too_old"      // ts before now − max age
	ReasonTSInFuture     Reason = "ts_in_future"    // ts after now + max skew
	ReasonUnknownTenant  Reason = "unknown_tenant"  // tenant_id is not in the tenant catalogue
	ReasonUnknownApp     Reason = "unknown_app"     // app_id is not an app of the tenant
	ReasonTenantMismatch Reason = "tenant_mismatch" // the credentials belong to another tenant
	ReasonAppNotAllowed  Reason = "app_not_allowed" // the credentials are not scoped to app_id
	ReasonPOCCapReached  Reason = "poc_cap_reached" // a POC tenant-month is full and the device is new
)

// Reasons lists every rejection reason, in the order of the constants above.
var Reasons = []Reason{
	ReasonBadJSON, ReasonMissingField, ReasonBadField, ReasonBadEventType, ReasonTSTooOld, ReasonTSInFuture,
	ReasonUnknownTenant, ReasonUnknownApp, ReasonTenantMismatch, ReasonAppNotAllowed, ReasonPOCCapReached,
}

// Rejection says why one event of a batch was refused. Index is the event's 0-based position
// in the batch (blank NDJSON lines are not counted).
type Rejection struct {
	Index   int    `json:"index"`
	Reason  Reason `json:"reason"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (r *Rejection) Error() string {
	if r.Field != "" {
		return fmt.Sprintf("event %d: %s (%s): %s", r.Index, r.Reason, r.Field, r.Message)
	}
	return fmt.Sprintf("event %d: %s: %s", r.Index, r.Reason, r.Message)
}

// Bounds limits the event time relative to the receiving clock. A zero MaxAge disables the lower
// bound (the admin import path takes historical events); a zero MaxFuture disables the upper.
type Bounds struct {
	MaxAge    time.Duration
	MaxFuture time.Duration
}

// DefaultBounds are the ingest bounds of the contract: [now − 35 days, now + 10 minutes].
var DefaultBounds = Bounds{MaxAge: 35 * 24 * time.Hour, MaxFuture: 10 * time.Minute}

// jsonEvent mirrors the wire JSON; pointers tell absent from empty.
type jsonEvent struct {
	EventID       *string `json:"event_id"`
	TenantID      *string `json:"tenant_id"`
	AppID         *string `json:"app_id"`
	GUID          *string `json:"guid"`
	Event         *string `json:"event"`
	MiniProgramID *string `json:"mini_program_id"`
	TS            *string `json:"ts"`
}

// Parse decodes one JSON event and validates it against the contract and the time bounds.
// The returned Rejection has Index 0; callers that work on batches set it.
func Parse(raw []byte, now time.Time, b Bounds) (Event, *Rejection) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return Event{}, reject(ReasonBadJSON, "", "event must be a JSON object")
	}
	var j jsonEvent
	if !j.decodeFlat(raw) { // the common case is decoded by hand, the rest by encoding/json
		if err := json.Unmarshal(raw, &j); err != nil {
			if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
				return Event{}, reject(ReasonBadField, te.Field, fmt.Sprintf("must be a string, got %s", te.Value))
			}
			return Event{}, reject(ReasonBadJSON, "", err.Error())
		}
		if !utf8.Valid(raw) {
			return Event{}, reject(ReasonBadJSON, "", "body is not valid UTF-8")
		}
	}
	var e Event
	var r *Rejection
	if e.TenantID, r = required("tenant_id", j.TenantID, 64, isIDByte); r != nil {
		return Event{}, r
	}
	if e.AppID, r = required("app_id", j.AppID, 64, isIDByte); r != nil {
		return Event{}, r
	}
	if e.GUID, r = required("guid", j.GUID, 128, isPrintable); r != nil {
		return Event{}, r
	}
	if j.Event == nil || *j.Event == "" {
		return Event{}, reject(ReasonMissingField, "event", "required")
	}
	t, ok := ParseType(*j.Event)
	if !ok {
		return Event{}, reject(ReasonBadEventType, "event", fmt.Sprintf("%.40q is not one of search, pre_download, open", *j.Event))
	}
	e.Type = t
	if j.MiniProgramID != nil && *j.MiniProgramID != "" {
		if e.MiniProgramID, r = required("mini_program_id", j.MiniProgramID, 128, isPrintable); r != nil {
			return Event{}, r
		}
	} else if t != Search {
		return Event{}, reject(ReasonMissingField, "mini_program_id", "required for "+t.String())
	}
	if j.EventID != nil && *j.EventID != "" {
		if e.EventID, r = required("event_id", j.EventID, 64, isPrintable); r != nil {
			return Event{}, r
		}
	}
	if j.TS == nil || *j.TS == "" {
		return Event{}, reject(ReasonMissingField, "ts", "required")
	}
	ts, err := time.Parse(time.RFC3339Nano, *j.TS)
	if err != nil {
		return Event{}, reject(ReasonBadField, "ts", fmt.Sprintf("%.40q is not RFC 3339 with an offset", *j.TS))
	}
	// The Kafka encoding carries ts as int64 nanoseconds and an offset of at most ±18h (what
	// Decode takes): accepting anything else would acknowledge an event that is then stored
	// with another time, or that no consumer can decode.
	if _, off := ts.Zone(); off < -maxTSOffset || off > maxTSOffset {
		return Event{}, reject(ReasonBadField, "ts", fmt.Sprintf("UTC offset of %.40q is beyond ±18:00", *j.TS))
	}
	if !time.Unix(0, ts.UnixNano()).Equal(ts) {
		return Event{}, reject(ReasonBadField, "ts", fmt.Sprintf("%.40q is outside the years 1678–2262", *j.TS))
	}
	e.TS = ts
	if r := b.check(ts, now); r != nil {
		return Event{}, r
	}
	return e, nil
}

func (b Bounds) check(ts, now time.Time) *Rejection {
	if b.MaxAge > 0 && ts.Before(now.Add(-b.MaxAge)) {
		return reject(ReasonTSTooOld, "ts", fmt.Sprintf("older than %s", b.MaxAge))
	}
	if b.MaxFuture > 0 && ts.After(now.Add(b.MaxFuture)) {
		return reject(ReasonTSInFuture, "ts", fmt.Sprintf("more than %s ahead of the server clock", b.MaxFuture))
	}
	return nil
}

func reject(r Reason, field, msg string) *Rejection {
	return &Rejection{Reason: r, Field: field, Message: msg}
}

func required(field string, v *string, max int, ok func(byte) bool) (string, *Rejection) {
	if v == nil || *v == "" {
		return "", reject(ReasonMissingField, field, "required")
	}
	s := *v
	if len(s) > max {
		return "", reject(ReasonBadField, field, fmt.Sprintf("longer than %d characters", max))
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return "", reject(ReasonBadField, field, fmt.Sprintf("character %q at %d is not allowed", s[i], i))
		}
	}
	return s, nil
}

// ValidID reports whether s is a valid tenant or app id: 1–64 of [A-Za-z0-9._-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isIDByte(s[i]) {
			return false
		}
	}
	return true
}

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
}

func isPrintable(c byte) bool { return c >= 0x20 && c <= 0x7e }
