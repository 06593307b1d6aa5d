package event

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Schema names the binary encoding carried in Kafka message values; producers put it in the
// "schema" header so consumers can refuse what they do not understand. The message is
// maumeter.event.v1.Event of schemas/events/v1/event.proto, in protobuf wire format.
const (
	SchemaHeader = "schema"
	SchemaV1     = "maumeter.event.v1"
)

// maxTSOffset bounds the UTC offset of ts, in seconds, on the wire and therefore in Parse.
const maxTSOffset = 18 * 3600

// ErrDecode is returned for a Kafka value that is not a valid v1 event.
var ErrDecode = errors.New("decode event")

// Field numbers of schemas/events/v1/event.proto.
const (
	fEventID       = 1
	fTenantID      = 2
	fAppID         = 3
	fGUID          = 4
	fType          = 5
	fMiniProgramID = 6
	fTSUnixNano    = 7
	fTSOffsetSec   = 8
)

// AppendBinary appends the v1 protobuf encoding of e to b.
func (e *Event) AppendBinary(b []byte) ([]byte, error) {
	b = appendString(b, fEventID, e.EventID)
	b = appendString(b, fTenantID, e.TenantID)
	b = appendString(b, fAppID, e.AppID)
	b = appendString(b, fGUID, e.GUID)
	b = protowire.AppendTag(b, fType, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.Type))
	b = appendString(b, fMiniProgramID, e.MiniProgramID)
	b = protowire.AppendTag(b, fTSUnixNano, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(e.TS.UnixNano()))
	_, off := e.TS.Zone()
	if off != 0 {
		b = protowire.AppendTag(b, fTSOffsetSec, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(int64(off)))
	}
	return b, nil
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// Decode parses a v1 protobuf event. Unknown fields are skipped, so adding fields is compatible.
func Decode(b []byte) (Event, error) {
	var e Event
	var nanos int64
	var off int64
	var haveTS bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Event{}, fmt.Errorf("%w: tag: %w", ErrDecode, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && num >= fEventID && num <= fMiniProgramID && num != fType:
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				return Event{}, fmt.Errorf("%w: field %d: %w", ErrDecode, num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fEventID:
				e.EventID = v
			case fTenantID:
				e.TenantID = v
			case fAppID:
				e.AppID = v
			case fGUID:
				e.GUID = v
			case fMiniProgramID:
				e.MiniProgramID = v
			}
		case typ == protowire.VarintType && (num == fType || num == fTSUnixNano || num == fTSOffsetSec):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return Event{}, fmt.Errorf("%w: field %d: %w", ErrDecode, num, protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fType:
				if v > 255 {
					return Event{}, fmt.Errorf("%w: event type %d", ErrDecode, v)
				}
				e.Type = Type(v)
			case fTSUnixNano:
				nanos, haveTS = int64(v), true
			case fTSOffsetSec:
				off = protowire.DecodeZigZag(v)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return Event{}, fmt.Errorf("%w: field %d: %w", ErrDecode, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	switch {
	case !e.Type.Valid():
		return Event{}, fmt.Errorf("%w: event type %d", ErrDecode, e.Type)
	case e.TenantID == "" || e.AppID == "" || e.GUID == "":
		return Event{}, fmt.Errorf("%w: tenant_id, app_id and guid are required", ErrDecode)
	case !haveTS:
		return Event{}, fmt.Errorf("%w: ts is required", ErrDecode)
	case off < -maxTSOffset || off > maxTSOffset:
		return Event{}, fmt.Errorf("%w: ts offset %ds", ErrDecode, off)
	}
	e.TS = time.Unix(0, nanos).In(zoneFor(int(off)))
	return e, nil
}

func zoneFor(off int) *time.Location {
	if off == 0 {
		return time.UTC
	}
	return time.FixedZone("", off)
}
