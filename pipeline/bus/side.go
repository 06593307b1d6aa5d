package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// The side topics of the events topic (docs/ARCHITECTURE.md, "Parked events and the DLQ").
const (
	// ParkedTopic holds events the counter could not place yet (a tenant or app its catalogue
	// does not know): the counter's parked replayer re-produces them once it knows them.
	ParkedTopic = "mau.events.parked.v1"
	// DLQTopic holds records the counter cannot decode (or whose schema header it does not
	// know); `maumeter dlq list` shows them and `maumeter dlq replay` re-produces them.
	DLQTopic = "mau.events.dlq.v1"
	// QuotaTopic holds the quota notices and their deliveries (pipeline/quota), compacted.
	QuotaTopic = "mau.quota.v1"
)

// Headers the counter adds to a record it parks or sends to the DLQ. Every one starts with
// SideHeaderPrefix: a replay strips them and leaves the record's own headers as they were.
const (
	SideHeaderPrefix      = "maumeter-"
	HeaderSourceTopic     = "maumeter-source-topic"
	HeaderSourcePartition = "maumeter-source-partition"
	HeaderSourceOffset    = "maumeter-source-offset"
	HeaderReason          = "maumeter-reason" // unknown_tenant, unknown_app, unknown_schema, undecodable
	HeaderError           = "maumeter-error"  // DLQ only: what the decoder said
)

// Source is where a parked or dead-lettered record was first read.
type Source struct {
	Topic     string
	Partition int
	Offset    int64
}

func (s Source) String() string { return fmt.Sprintf("%s/%d@%d", s.Topic, s.Partition, s.Offset) }

// SideHeaders returns m's own headers (those without SideHeaderPrefix) followed by the source
// coordinates of m, the reason and, when not empty, the error.
func SideHeaders(m kafka.Message, reason, errText string) []kafka.Header {
	h := OwnHeaders(m.Headers)
	h = append(h,
		kafka.Header{Key: HeaderSourceTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(m.Partition), 10)},
		kafka.Header{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, m.Offset, 10)},
		kafka.Header{Key: HeaderReason, Value: []byte(reason)})
	if errText != "" {
		h = append(h, kafka.Header{Key: HeaderError, Value: []byte(errText)})
	}
	return h
}

// Retag returns a side record's headers with its reason and error replaced (a parked record
// that turns out undecodable keeps its source coordinates on its way to the DLQ).
func Retag(hs []kafka.Header, reason, errText string) []kafka.Header {
	out := make([]kafka.Header, 0, len(hs)+2)
	for _, h := range hs {
		if h.Key != HeaderReason && h.Key != HeaderError {
			out = append(out, h)
		}
	}
	out = append(out, kafka.Header{Key: HeaderReason, Value: []byte(reason)})
	if errText != "" {
		out = append(out, kafka.Header{Key: HeaderError, Value: []byte(errText)})
	}
	return out
}

// OwnHeaders returns the headers that are not side headers, in a new slice.
func OwnHeaders(hs []kafka.Header) []kafka.Header {
	out := make([]kafka.Header, 0, len(hs)+5)
	for _, h := range hs {
		if !strings.HasPrefix(h.Key, SideHeaderPrefix) {
			out = append(out, h)
		}
	}
	return out
}

// Header returns the value of the first header named key, and whether there is one.
func Header(hs []kafka.Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// SourceOf reads the source coordinates from a side record's headers.
func SourceOf(hs []kafka.Header) (Source, error) {
	var s Source
	var ok bool
	if s.Topic, ok = Header(hs, HeaderSourceTopic); !ok {
		return s, fmt.Errorf("no %s header", HeaderSourceTopic)
	}
	p, _ := Header(hs, HeaderSourcePartition)
	n, err := strconv.Atoi(p)
	if err != nil {
		return s, fmt.Errorf("%s header %q: %w", HeaderSourcePartition, p, err)
	}
	s.Partition = n
	o, _ := Header(hs, HeaderSourceOffset)
	if s.Offset, err = strconv.ParseInt(o, 10, 64); err != nil {
		return s, fmt.Errorf("%s header %q: %w", HeaderSourceOffset, o, err)
	}
	return s, nil
}

// RecordWriter writes prepared messages, each to its own Topic, acknowledged by all in-sync
// replicas; keys are hashed like the event producer's. It is safe for concurrent use; Close it.
type RecordWriter struct {
	w *kafka.Writer
}

// NewRecordWriter returns a writer; messages must name their topic.
func NewRecordWriter(n *Net) *RecordWriter {
	return &RecordWriter{w: &kafka.Writer{
		Addr: kafka.TCP(n.Brokers...), Transport: n.Transport(), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, Compression: kafka.Lz4,
		BatchSize: 1000, BatchBytes: 8 << 20, BatchTimeout: 2 * time.Millisecond, MaxAttempts: 5,
		WriteTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
	}}
}

// Write returns nil only when Kafka confirmed every message.
func (w *RecordWriter) Write(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := w.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("%w: write %d records: %w", ErrUnavailable, len(msgs), err)
	}
	return nil
}

// Close flushes and closes the writer.
func (w *RecordWriter) Close() error { return w.w.Close() }

// Reproduce writes records to the producer's topic as they are (key, value, headers), through
// the same partitioner as Produce, so a record lands on the partition its key selects. It
// returns nil only when Kafka confirmed every one; the records' Topic, Partition and Offset
// are ignored.
func (p *Producer) Reproduce(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		out[i] = kafka.Message{Key: m.Key, Value: m.Value, Headers: m.Headers}
	}
	if err := p.w.WriteMessages(ctx, out...); err != nil {
		return fmt.Errorf("%w: reproduce %d records: %w", ErrUnavailable, len(msgs), err)
	}
	return nil
}

// CommitOffsets commits offsets (partition → next offset) of topic for group as a simple
// consumer (generation -1): for a group with no members, such as the one the parked replayer
// keeps its position in. Transient coordinator errors (a coordinator still being elected: the
// first commit of a new group on a broker that just started) are retried for up to 30 seconds.
func CommitOffsets(ctx context.Context, n *Net, group, topic string, offsets map[int]int64) error {
	parts := make([]kafka.OffsetCommit, 0, len(offsets))
	for p, o := range offsets {
		parts = append(parts, kafka.OffsetCommit{Partition: p, Offset: o})
	}
	c := n.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := commitOffsets(ctx, c, group, topic, parts)
		var kerr kafka.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func commitOffsets(ctx context.Context, c *kafka.Client, group, topic string, parts []kafka.OffsetCommit) error {
	resp, err := c.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{topic: parts}})
	if err != nil {
		return fmt.Errorf("commit %s for %s: %w", topic, group, err)
	}
	for _, ps := range resp.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return fmt.Errorf("commit %s/%d for %s: %w", topic, p.Partition, group, p.Error)
			}
		}
	}
	return nil
}

// ReadRange reads partition p of topic from offset from up to end (exclusive), calling fn on
// each record until fn says stop or returns an error. A range that cannot be read to its end
// within a minute plus a millisecond a record (records removed under it) ends with an error.
func ReadRange(ctx context.Context, n *Net, topic string, p int, from, end int64, fn func(kafka.Message) (stop bool, err error)) error {
	if from >= end {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: n.Brokers, Dialer: n.Dialer(), Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return fmt.Errorf("read %s/%d from %d: %w", topic, p, from, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(end-from)*time.Millisecond)
	defer cancel()
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("read %s/%d from %d: %w", topic, p, from, err)
		}
		stop, err := fn(m)
		if err != nil || stop || m.Offset+1 >= end {
			return err
		}
	}
}

// ReadAll reads every record kept on topic, partition by partition, up to the end each had
// when the call began, calling fn on each until it returns an error.
func ReadAll(ctx context.Context, n *Net, topic string, fn func(kafka.Message) error) error {
	first, err := FirstOffsets(ctx, n, topic)
	if err != nil {
		return err
	}
	end, err := EndOffsets(ctx, n, topic)
	if err != nil {
		return err
	}
	parts := make([]int, 0, len(end))
	for p := range end {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	for _, p := range parts {
		err := ReadRange(ctx, n, topic, p, first[p], end[p], func(m kafka.Message) (bool, error) { return false, fn(m) })
		if err != nil {
			return err
		}
	}
	return nil
}
