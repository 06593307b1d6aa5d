package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
)

func TestPreviewBytes(t *testing.T) {
	f := func(in string, n int, want string) {
		t.Helper()
		if got := previewBytes([]byte(in), n); got != want {
			t.Errorf("previewBytes(%q, %d) = %s, want %s", in, n, got, want)
		}
	}
	f("", 64, `""`)
	f("abc", 64, `"abc"`)
	f("abcdef", 3, `"abc"…`)
	f("a\x00\x1b[2J\xff", 64, `"a\x00\x1b[2J\xff"`) // control bytes and a terminal escape, escaped
}

// dlqMessage is a DLQ record of a message read at source partition p, offset o.
func dlqMessage(value []byte, p int, o int64) kafka.Message {
	src := kafka.Message{Topic: "ev", Partition: p, Offset: o, Value: value}
	return kafka.Message{Partition: 0, Offset: 9, Value: value, Headers: bus.SideHeaders(src, "undecodable", "boom")}
}

func TestDLQRecordAndFilter(t *testing.T) {
	r := newDLQRecord(dlqMessage([]byte("garbage"), 3, 41), 4)
	if r.Source != "ev/3@41" || r.Reason != "undecodable" || r.Error != "boom" || r.ValuePreview != `"garb"…` || r.ValueBytes != 7 {
		t.Errorf("record %+v", r)
	}
	noHeaders := newDLQRecord(kafka.Message{Value: []byte("x")}, 64)
	if noHeaders.Source != "" || noHeaders.srcErr == nil {
		t.Errorf("a record without source headers: %+v", noHeaders)
	}
	f := func(filter dlqFilter, r dlqRecord, want bool) {
		t.Helper()
		if got := filter.match(r); got != want {
			t.Errorf("%+v match %s = %v, want %v", filter, r.Source, got, want)
		}
	}
	f(dlqFilter{-1, -1}, r, true)
	f(dlqFilter{-1, -1}, noHeaders, true)
	f(dlqFilter{3, -1}, r, true)
	f(dlqFilter{2, -1}, r, false)
	f(dlqFilter{3, 41}, r, true)
	f(dlqFilter{3, 40}, r, false)
	f(dlqFilter{-1, 41}, r, true)
	f(dlqFilter{3, -1}, noHeaders, false)
}

// TestReplayMessage: a record that decodes goes back keyed as the gateway keys it, whatever
// key it had, with its value unchanged and the schema header; one that does not is refused.
func TestReplayMessage(t *testing.T) {
	e := event.Event{TenantID: "acme", AppID: "a1", GUID: "g/1", Type: event.Search, TS: time.Unix(1e9, 0).UTC()}
	v, err := e.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	m := dlqMessage(v, 0, 5)
	m.Key = []byte("wrong")
	got, err := replayMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Key) != "acme/a1/g/1" || !bytes.Equal(got.Value, v) || len(got.Headers) != 1 ||
		got.Headers[0].Key != event.SchemaHeader || string(got.Headers[0].Value) != event.SchemaV1 {
		t.Errorf("replay message %+v", got)
	}
	if _, err := replayMessage(dlqMessage([]byte{0xff}, 0, 6)); err == nil {
		t.Error("garbage replayed")
	}
}

func TestDLQUsage(t *testing.T) {
	f := func(args []string, want string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(context.Background(), time.Now, append([]string{"dlq"}, args...), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), want) {
			t.Errorf("dlq %v = %d %q, want 2 and %q", args, code, errb.String(), want)
		}
	}
	f(nil, "a subcommand is required")
	f([]string{"purge"}, `unknown subcommand "purge"`)
	f([]string{"list", "--format", "xml"}, `--format "xml": want text or json`)
	f([]string{"replay", "--kafka-brokers", ""}, "--kafka-brokers (MAUMETER_KAFKA_BROKERS) is required")
}
