package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
)

const dlqUsage = `usage: maumeter dlq <list|replay> [flags]

  list     print every record of the DLQ topic: its place in the DLQ, where the counter read it
           (source topic/partition@offset), the reason and the decoder's error, and a preview of
           its value (at most --preview bytes, escaped)
  replay   decode each selected DLQ record with this binary's decoder and re-produce those that
           decode onto the events topic, keyed as the gateway keys them, with the current schema
           header; those that still fail are listed and the exit status is 3

Select records with --source-partition and --source-offset (both default to all). The DLQ
keeps its records: replaying twice produces the same events twice, and the counter's device
sets count each device once, so nothing is counted twice (see docs/OPERATIONS.md).`

// dlqRecord is one DLQ record as the dlq commands show it.
type dlqRecord struct {
	DLQPartition int    `json:"dlq_partition"`
	DLQOffset    int64  `json:"dlq_offset"`
	Source       string `json:"source"` // topic/partition@offset, "" when the headers do not say
	Reason       string `json:"reason"`
	Error        string `json:"error"`
	KeyPreview   string `json:"key_preview"`
	ValueBytes   int    `json:"value_bytes"`
	ValuePreview string `json:"value_preview"`

	src    bus.Source
	srcErr error
}

func newDLQRecord(m kafka.Message, preview int) dlqRecord {
	r := dlqRecord{DLQPartition: m.Partition, DLQOffset: m.Offset, ValueBytes: len(m.Value),
		KeyPreview: previewBytes(m.Key, preview), ValuePreview: previewBytes(m.Value, preview)}
	r.src, r.srcErr = bus.SourceOf(m.Headers)
	if r.srcErr == nil {
		r.Source = r.src.String()
	}
	r.Reason, _ = bus.Header(m.Headers, bus.HeaderReason)
	r.Error, _ = bus.Header(m.Headers, bus.HeaderError)
	return r
}

// previewBytes is at most n bytes of b as a quoted Go string (control and non-UTF-8 bytes
// escaped, so a terminal shows them safely), with "…" when cut.
func previewBytes(b []byte, n int) string {
	cut := len(b) > n
	if cut {
		b = b[:n]
	}
	s := strconv.Quote(string(b))
	if cut {
		s += "…"
	}
	return s
}

// dlqFilter selects DLQ records by their source coordinates; -1 selects any.
type dlqFilter struct {
	partition int
	offset    int64
}

func (f dlqFilter) match(r dlqRecord) bool {
	if f.partition < 0 && f.offset < 0 {
		return true
	}
	if r.srcErr != nil {
		return false
	}
	return (f.partition < 0 || r.src.Partition == f.partition) && (f.offset < 0 || r.src.Offset == f.offset)
}

// replayMessage is the events-topic record of a DLQ record whose value the current decoder
// accepts: the key the gateway would give it (so it lands on its device's partition), its value
// unchanged and the current schema header.
func replayMessage(m kafka.Message) (kafka.Message, error) {
	e, err := event.Decode(m.Value)
	if err != nil {
		return kafka.Message{}, err
	}
	return kafka.Message{Key: e.PartitionKey(), Value: m.Value,
		Headers: []kafka.Header{{Key: event.SchemaHeader, Value: []byte(event.SchemaV1)}}}, nil
}

func runDLQ(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, dlqUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: a subcommand is required", errUsage)
		}
		return nil
	}
	o := &options{now: now}
	fs := flag.NewFlagSet("dlq "+args[0], flag.ContinueOnError)
	o.kafkaFlags(fs)
	o.sideTopicFlags(fs)
	f := dlqFilter{}
	fs.IntVar(&f.partition, "source-partition", -1, "only records read from this partition of the events topic (-1: any)")
	fs.Int64Var(&f.offset, "source-offset", -1, "only the record read at this offset (-1: any)")
	preview := fs.Int("preview", 64, "list: bytes of each key and value to show")
	format := fs.String("format", "text", "list: text or json (one object a line)")
	dryRun := fs.Bool("dry-run", false, "replay: decode and report, produce nothing")
	switch args[0] {
	case "list", "replay":
	default:
		fmt.Fprintln(stderr, dlqUsage)
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
	}
	if err := parseFlags(fs, args[1:], stderr); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("%w: --format %q: want text or json", errUsage, *format)
	}
	if *preview < 0 {
		return fmt.Errorf("%w: --preview must not be negative", errUsage)
	}
	brokers, err := o.kafkaNet()
	if err != nil {
		return err
	}
	if len(brokers.Brokers) == 0 {
		return fmt.Errorf("%w: --kafka-brokers (MAUMETER_KAFKA_BROKERS) is required", errUsage)
	}
	var sel []kafka.Message
	err = bus.ReadAll(ctx, brokers, o.dlqTopic, func(m kafka.Message) error {
		if f.match(newDLQRecord(m, 0)) {
			sel = append(sel, m)
		}
		return nil
	})
	if errors.Is(err, bus.ErrTopicNotFound) {
		return fmt.Errorf("DLQ topic %s does not exist (maumeter migrate creates it): %w", o.dlqTopic, err)
	}
	if err != nil {
		return err
	}
	if args[0] == "list" {
		return listDLQ(stdout, sel, *preview, *format)
	}
	return replayDLQ(ctx, stdout, brokers, o.topic, sel, *dryRun)
}

func listDLQ(w io.Writer, sel []kafka.Message, preview int, format string) error {
	enc := json.NewEncoder(w)
	for _, m := range sel {
		r := newDLQRecord(m, preview)
		if format == "json" {
			if err := enc.Encode(r); err != nil {
				return err
			}
			continue
		}
		src := r.Source
		if src == "" {
			src = "unknown (" + r.srcErr.Error() + ")"
		}
		fmt.Fprintf(w, "dlq %d@%d  source %s  reason %s  error %q  key %s  value (%d bytes) %s\n",
			r.DLQPartition, r.DLQOffset, src, r.Reason, r.Error, r.KeyPreview, r.ValueBytes, r.ValuePreview)
	}
	if format == "text" {
		fmt.Fprintf(w, "%d records\n", len(sel))
	}
	return nil
}

func replayDLQ(ctx context.Context, w io.Writer, brokers *bus.Net, topic string, sel []kafka.Message, dryRun bool) error {
	var out []kafka.Message
	failed := 0
	for _, m := range sel {
		r := newDLQRecord(m, 0)
		rm, err := replayMessage(m)
		if err != nil {
			failed++
			fmt.Fprintf(w, "still fails  dlq %d@%d  source %s: %v\n", r.DLQPartition, r.DLQOffset, r.Source, err)
			continue
		}
		out = append(out, rm)
		fmt.Fprintf(w, "replay       dlq %d@%d  source %s\n", r.DLQPartition, r.DLQOffset, r.Source)
	}
	if !dryRun && len(out) > 0 {
		p := bus.NewProducer(brokers, topic)
		defer p.Close()
		for len(out) > 0 {
			n := min(len(out), 1000)
			if err := p.Reproduce(ctx, out[:n]); err != nil {
				return err
			}
			out = out[n:]
		}
	}
	verb := "replayed"
	if dryRun {
		verb = "would replay (dry run)"
	}
	fmt.Fprintf(w, "%s %d records to %s; %d still fail\n", verb, len(sel)-failed, topic, failed)
	if failed > 0 {
		return exitCode{3, fmt.Sprintf("%d DLQ records still fail to decode (listed above)", failed)}
	}
	return nil
}
