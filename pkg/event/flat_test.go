package event

import (
	"encoding/json"
	"testing"
)

func TestDecodeFlat(t *testing.T) {
	f := func(raw string, wantFlat bool) {
		t.Helper()
		var flat, slow jsonEvent
		got := flat.decodeFlat([]byte(raw))
		if got != wantFlat {
			t.Errorf("decodeFlat(%q) = %v, want %v", raw, got, wantFlat)
		}
		if got {
			if err := json.Unmarshal([]byte(raw), &slow); err != nil || !sameJSON(flat, slow) {
				t.Errorf("decodeFlat(%q) = %s; json.Unmarshal = %s, %v", raw, showJSON(flat), showJSON(slow), err)
			}
		}
	}
	// What SDKs send: decoded by hand.
	f(ev(), true)
	f(`{}`, true)
	f(" { \"guid\" : \"g\" ,\n\t\"ts\":\"\" } ", true)
	f(`{"event_id":"e","tenant_id":"t","app_id":"a","guid":"g","event":"open","mini_program_id":"m","ts":"x"}`, true)
	// Everything else: left to encoding/json.
	f(`{"guid":"a\u0062"}`, false)         // escape
	f(`{"guid":"a\"b"}`, false)            // escaped quote
	f("{\"guid\":\"caf\xc3\xa9\"}", false) // non-ASCII
	f("{\"guid\":\"a\x01\"}", false)       // control character
	f(`{"guid":42}`, false)                // not a string
	f(`{"guid":null}`, false)              // null
	f(`{"GUID":"g"}`, false)               // a case variant encoding/json would match
	f(`{"colour":"red"}`, false)           // unknown field
	f(`{"guid":"a","guid":"b"}`, false)    // repeated
	f(`{"guid":"g"} x`, false)             // trailing data
	f(`{"guid":"g",}`, false)              // trailing comma
	f(`{"guid" "g"}`, false)               // no colon
	f(`{"guid":"g"`, false)                // truncated
	f("{\"guid\":\"g\"\v}", false)         // not JSON whitespace
	f(`[{"guid":"g"}]`, false)             // not an object
}
