package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Batch limits of POST /v1/events.
const (
	MaxBatchEvents = 1000
	MaxBatchBytes  = 1 << 20
)

// Batch errors. ErrBatchTooLarge is a 413; ErrBadBatch a 400.
var (
	ErrBatchTooLarge = errors.New("batch too large")
	ErrBadBatch      = errors.New("bad batch")
	ErrEmptyBatch    = errors.New("empty batch")
)

// SplitBatch splits a request body into raw events. A body whose first non-blank byte is '['
// is a JSON array; anything else is NDJSON, one event per line, blank lines skipped. A broken
// NDJSON line is returned as is (it fails Parse with bad_json and costs nothing else); a broken
// array fails the whole batch, since its elements cannot be told apart.
func SplitBatch(body []byte, maxEvents int) ([][]byte, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, ErrEmptyBatch
	}
	var out [][]byte
	if trimmed[0] == '[' {
		var raws []json.RawMessage
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, fmt.Errorf("%w: JSON array: %v", ErrBadBatch, err)
		}
		if len(raws) > maxEvents {
			return nil, fmt.Errorf("%w: %d events, at most %d per request", ErrBatchTooLarge, len(raws), maxEvents)
		}
		out = make([][]byte, len(raws))
		for i, r := range raws {
			out[i] = r
		}
	} else {
		for line := range bytes.SplitSeq(trimmed, []byte{'\n'}) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if len(out) >= maxEvents { // >=, not ==: a maxEvents below 1 must not lift the limit
				return nil, fmt.Errorf("%w: more than %d events per request", ErrBatchTooLarge, maxEvents)
			}
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		return nil, ErrEmptyBatch
	}
	return out, nil
}
