package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/pkg/event"
)

// EndOffsets returns the offset one past the last message of every partition of topic.
func EndOffsets(ctx context.Context, n *Net, topic string) (map[int]int64, error) {
	return listOffsets(ctx, n, topic, false)
}

// FirstOffsets returns the offset of the first message kept on every partition of topic.
func FirstOffsets(ctx context.Context, n *Net, topic string) (map[int]int64, error) {
	return listOffsets(ctx, n, topic, true)
}

func listOffsets(ctx context.Context, n *Net, topic string, first bool) (map[int]int64, error) {
	what := "end"
	if first {
		what = "first"
	}
	client := n.Client()
	parts, err := partitions(ctx, client, topic)
	if err != nil {
		return nil, err
	}
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.LastOffsetOf(p)
		if first {
			reqs[i] = kafka.FirstOffsetOf(p)
		}
	}
	offs, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("%s offsets %s: %w", what, topic, err)
	}
	out := make(map[int]int64, len(parts))
	for _, po := range offs.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("%s offsets %s partition %d: %w", what, topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
		if first {
			out[po.Partition] = po.FirstOffset
		}
	}
	return out, nil
}

// Lag is how far a consumer group is behind the end of a topic, in messages, summed over
// partitions. A partition without a committed offset counts from its first offset.
func Lag(ctx context.Context, n *Net, group, topic string) (int64, error) {
	end, err := EndOffsets(ctx, n, topic)
	if err != nil {
		return 0, fmt.Errorf("lag: %w", err)
	}
	first, err := FirstOffsets(ctx, n, topic)
	if err != nil {
		return 0, fmt.Errorf("lag: %w", err)
	}
	committed, err := CommittedOffsets(ctx, n, group, topic)
	if err != nil {
		return 0, fmt.Errorf("lag: %w", err)
	}
	var lag int64
	for p, e := range end {
		pos, ok := committed[p]
		if !ok {
			pos = first[p]
		}
		lag += max(0, e-pos)
	}
	return lag, nil
}

// CommittedOffsets returns the offsets group has committed on every partition of topic; a
// partition without a commit is absent. Transient coordinator errors (a broker that just
// started, a coordinator moving) are retried for up to 15 seconds.
func CommittedOffsets(ctx context.Context, n *Net, group, topic string) (map[int]int64, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := committedOffsets(ctx, n, group, topic)
		var kerr kafka.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() || time.Now().After(deadline) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func committedOffsets(ctx context.Context, n *Net, group, topic string) (map[int]int64, error) {
	client := n.Client()
	parts, err := partitions(ctx, client, topic)
	if err != nil {
		return nil, err
	}
	resp, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("committed offsets %s: %w", group, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("committed offsets %s: %w", group, resp.Error)
	}
	out := map[int]int64{}
	for _, c := range resp.Topics[topic] {
		if c.Error != nil {
			return nil, fmt.Errorf("committed offsets %s partition %d: %w", group, c.Partition, c.Error)
		}
		if c.CommittedOffset >= 0 {
			out[c.Partition] = c.CommittedOffset
		}
	}
	return out, nil
}

// ErrTopicNotFound is returned for a topic the brokers do not know (yet).
var ErrTopicNotFound = errors.New("topic not found")

// Partitions returns the partition ids of topic; ErrTopicNotFound when it does not exist.
func Partitions(ctx context.Context, n *Net, topic string) ([]int, error) {
	return partitions(ctx, n.Client(), topic)
}

func partitions(ctx context.Context, client *kafka.Client, topic string) ([]int, error) {
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return nil, fmt.Errorf("%w: %s", ErrTopicNotFound, topic)
	}
	parts := make([]int, len(meta.Topics[0].Partitions))
	for i, p := range meta.Topics[0].Partitions {
		parts[i] = p.ID
	}
	return parts, nil
}

// RollupsTopic is the compacted topic of monthly rollups, keyed tenant/month.
const RollupsTopic = "mau.rollups.v1"

// RollupSchema is the schema header value of rollup messages (JSON).
const RollupSchema = "maumeter.rollup.v1"

// CapsTopic is the compacted topic of POC cap states, keyed tenant/month (pipeline/caps).
const CapsTopic = "mau.caps.v1"

// CapsSchema is the schema header value of cap state messages (JSON).
const CapsSchema = "maumeter.caps.v1"

// JSONPublisher writes JSON values to a topic, acknowledged by all in-sync replicas. It is safe
// for concurrent use; Close it when done.
type JSONPublisher struct {
	w      *kafka.Writer
	schema string
}

// NewJSONPublisher returns a publisher for topic whose messages carry the schema header.
func NewJSONPublisher(n *Net, topic, schema string) *JSONPublisher {
	return &JSONPublisher{schema: schema, w: &kafka.Writer{
		Addr: kafka.TCP(n.Brokers...), Transport: n.Transport(), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, WriteTimeout: 10 * time.Second, MaxAttempts: 5,
	}}
}

// Publish writes v as JSON under key.
func (p *JSONPublisher) Publish(ctx context.Context, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("publish %s: %w", key, err)
	}
	err = p.w.WriteMessages(ctx, kafka.Message{Key: []byte(key), Value: data,
		Headers: []kafka.Header{{Key: event.SchemaHeader, Value: []byte(p.schema)}}})
	if err != nil {
		return fmt.Errorf("%w: publish %s: %w", ErrUnavailable, key, err)
	}
	return nil
}

// Close flushes and closes the publisher.
func (p *JSONPublisher) Close() error { return p.w.Close() }
