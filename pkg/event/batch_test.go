package event

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestSplitBatch(t *testing.T) {
	f := func(body string, max int, want ...string) {
		t.Helper()
		got, err := SplitBatch([]byte(body), max)
		if err != nil {
			t.Errorf("SplitBatch(%q, %d)\ngot  error %v\nwant %q", body, max, err, want)
			return
		}
		gotS := make([]string, len(got))
		for i, g := range got {
			gotS[i] = string(g)
		}
		if fmt.Sprintf("%q", gotS) != fmt.Sprintf("%q", want) {
			t.Errorf("SplitBatch(%q, %d)\ngot  %q\nwant %q", body, max, gotS, want)
		}
	}
	a, b, c := ev("guid", `"a"`), ev("guid", `"b"`), ev("guid", `"c"`)

	// JSON array: elements as they are written, without the whitespace around them.
	f(`[`+a+`]`, 1000, a)
	f(`[`+a+`,`+b+`,`+c+`]`, 1000, a, b, c)
	f(" \r\n\t[ "+a+" ,\n\t"+b+"\r\n]\n ", 1000, a, b)
	f(`[ {"guid" : "x", "n": [1, {"m": 2}]} ]`, 1000, `{"guid" : "x", "n": [1, {"m": 2}]}`)
	// Elements that are not objects are still elements: Parse rejects each on its own.
	f(`[1, "x", null, [], {}]`, 1000, `1`, `"x"`, `null`, `[]`, `{}`)

	// NDJSON: one event per line; blank lines, CR and surrounding blanks dropped.
	f(a, 1000, a)
	f(a+"\n", 1000, a)
	f(a+"\n"+b+"\n"+c, 1000, a, b, c)
	f("\n\n"+a+"\n\n\n"+b+"\n\n", 1000, a, b)
	f(a+"\r\n"+b+"\r\n", 1000, a, b)
	f(a+"\r\n\r\n \t \r\n"+b, 1000, a, b)
	f("  "+a+"  \n\t"+b+"\t", 1000, a, b)
	// A line that does not start with '[' makes the body NDJSON, even if a later one does.
	f(a+"\n[1,2]", 1000, a, "[1,2]")
	// A broken line is returned as it is; only that event fails.
	broken := `{"tenant_id":"acme","guid":`
	f(a+"\n"+broken+"\n"+b, 1000, a, broken, b)
	f(a+"\n"+a[:10]+"\n"+b, 1000, a, a[:10], b)
	f("not json\n"+a, 1000, "not json", a)

	// At the limit.
	f(`[`+a+`,`+b+`]`, 2, a, b)
	f(a+"\n"+b+"\n\n\n", 2, a, b)
}

// TestSplitBatchParse checks that split events reach Parse one by one, so a broken line fails
// only itself.
func TestSplitBatchParse(t *testing.T) {
	f := func(body string, wantReasons ...Reason) {
		t.Helper()
		raws, err := SplitBatch([]byte(body), MaxBatchEvents)
		if err != nil {
			t.Errorf("SplitBatch(%q): %v", body, err)
			return
		}
		got := make([]Reason, len(raws))
		for i, raw := range raws {
			if _, r := Parse(raw, now, DefaultBounds); r != nil {
				got[i] = r.Reason
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(wantReasons) {
			t.Errorf("Parse each of SplitBatch(%q)\ngot  %q\nwant %q", body, got, wantReasons)
		}
	}
	ok := ev()
	f(ok+"\n"+`{"tenant_id":"acme","guid":`+"\r\n"+ok, "", ReasonBadJSON, "")
	f(ok+"\n"+ok[:len(ok)-1]+"\n"+ok, "", ReasonBadJSON, "")
	f(ok+"\n[]\n42\nnull\n"+ok, "", ReasonBadJSON, ReasonBadJSON, ReasonBadJSON, "")
	f(ok+"\n"+ev("event", `"click"`)+"\n"+ev("guid", absent), "", ReasonBadEventType, ReasonMissingField)
	f("["+ok+", 42, "+ev("event", `"click"`)+", "+ok+"]", "", ReasonBadJSON, ReasonBadEventType, "")
}

func TestSplitBatchErrors(t *testing.T) {
	f := func(body string, max int, want error) {
		t.Helper()
		got, err := SplitBatch([]byte(body), max)
		if !errors.Is(err, want) {
			t.Errorf("SplitBatch(%.80q, %d)\ngot  %d events, error %v\nwant error %v", body, max, len(got), err, want)
		}
		if err != nil && got != nil {
			t.Errorf("SplitBatch(%.80q, %d): error %v with %d events, want none", body, max, err, len(got))
		}
		for _, other := range []error{ErrEmptyBatch, ErrBadBatch, ErrBatchTooLarge} {
			if other != want && errors.Is(err, other) {
				t.Errorf("SplitBatch(%.80q, %d): error %v is also %v", body, max, err, other)
			}
		}
	}
	e := ev()

	f("", MaxBatchEvents, ErrEmptyBatch)
	f(" ", MaxBatchEvents, ErrEmptyBatch)
	f(" \t\r\n\r\n\n", MaxBatchEvents, ErrEmptyBatch)
	f("[]", MaxBatchEvents, ErrEmptyBatch)
	f(" [ \n ] \n", MaxBatchEvents, ErrEmptyBatch)

	// A broken array cannot be split, so the whole batch fails.
	f("[", MaxBatchEvents, ErrBadBatch)
	f("["+e, MaxBatchEvents, ErrBadBatch)
	f("["+e+",", MaxBatchEvents, ErrBadBatch)
	f("["+e+",]", MaxBatchEvents, ErrBadBatch)
	f("["+e[:len(e)-1]+"]", MaxBatchEvents, ErrBadBatch)
	f("["+e+"] x", MaxBatchEvents, ErrBadBatch)
	f("["+e+"]\n["+e+"]", MaxBatchEvents, ErrBadBatch)
	f("["+e+"]\n"+e, MaxBatchEvents, ErrBadBatch)
	f("[\"\xff\"]", MaxBatchEvents, nil) // json.Unmarshal takes invalid UTF-8; Parse rejects it

	// More than MaxBatchEvents, in either form.
	n := func(k int, sep string) string { return strings.Repeat(e+sep, k) }
	f("["+strings.TrimSuffix(n(MaxBatchEvents, ","), ",")+"]", MaxBatchEvents, nil)
	f("["+strings.TrimSuffix(n(MaxBatchEvents+1, ","), ",")+"]", MaxBatchEvents, ErrBatchTooLarge)
	f("["+strings.TrimSuffix(strings.Repeat("{},", 5000), ",")+"]", MaxBatchEvents, ErrBatchTooLarge)
	f(n(MaxBatchEvents, "\n"), MaxBatchEvents, nil)
	f(n(MaxBatchEvents, "\r\n\r\n"), MaxBatchEvents, nil) // blank lines do not count
	f(n(MaxBatchEvents+1, "\n"), MaxBatchEvents, ErrBatchTooLarge)
	f(n(MaxBatchEvents+1, "\r\n"), MaxBatchEvents, ErrBatchTooLarge)
	f(strings.Repeat("x\n", 5000), MaxBatchEvents, ErrBatchTooLarge)
	f("[{},{},{}]", 2, ErrBatchTooLarge)
	f("{}\n{}\n{}", 2, ErrBatchTooLarge)
	// A limit below one admits nothing, in either form.
	for _, max := range []int{0, -1, -1000} {
		f("[{}]", max, ErrBatchTooLarge)
		f("{}", max, ErrBatchTooLarge)
		f("{}\n{}", max, ErrBatchTooLarge)
	}
	// An empty batch is empty whatever the limit.
	f("[]", 0, ErrEmptyBatch)
	f("\n", -1, ErrEmptyBatch)
}
