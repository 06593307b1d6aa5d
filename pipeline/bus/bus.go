// Package bus is maumeter's Kafka adapter: topic creation, the event producer used by ingest and
// import, consumer-group lag, and the in-process broker (kfake) of the embedded default.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/maumeter/maumeter/pkg/event"
)

// Default topic and group names of the Kafka topology (docs/ARCHITECTURE.md).
const (
	EventsTopic = "mau.events.v1"
	CountGroup  = "maumeter-count"
)

// ErrUnavailable wraps produce failures: Kafka did not confirm the batch, nothing of it may be
// acknowledged, and the caller should retry later.
var ErrUnavailable = errors.New("kafka unavailable")

// Topic describes a topic to create.
type Topic struct {
	Name              string
	Partitions        int
	ReplicationFactor int
	Configs           map[string]string // e.g. cleanup.policy=compact
}

// ErrTooFewBrokers: a topic's replication factor exceeds the brokers of the cluster.
var ErrTooFewBrokers = errors.New("replication factor above the number of brokers")

// EnsureTopic creates t when it is missing. An existing topic is left alone; when its partition
// count differs from t's, that is logged, since keys (and so device sets) would move. A
// replication factor above the cluster's brokers is refused (ErrTooFewBrokers) rather than
// left to the broker's less specific error.
func EnsureTopic(ctx context.Context, n *Net, t Topic, log *slog.Logger) error {
	client := n.Client()
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{t.Name}})
	if err != nil {
		return fmt.Errorf("topic %s: metadata: %w", t.Name, err)
	}
	for _, mt := range meta.Topics {
		if mt.Name == t.Name && mt.Error == nil {
			if len(mt.Partitions) != t.Partitions {
				log.Warn("topic exists with another partition count; keeping it", "topic", t.Name,
					"partitions", len(mt.Partitions), "configured", t.Partitions)
			}
			return nil
		}
	}
	if n := len(meta.Brokers); t.ReplicationFactor > n {
		return fmt.Errorf("create topic %s: %w: replication factor %d needs at least %d brokers, the cluster has %d "+
			"(a single development broker: --replication-factor 1, or MAUMETER_REPLICATION_FACTOR=1)",
			t.Name, ErrTooFewBrokers, t.ReplicationFactor, t.ReplicationFactor, n)
	}
	tc := kafka.TopicConfig{Topic: t.Name, NumPartitions: t.Partitions, ReplicationFactor: t.ReplicationFactor}
	for k, v := range t.Configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", t.Name, err)
	}
	if err := resp.Errors[t.Name]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", t.Name, err)
	}
	log.Info("created topic", "topic", t.Name, "partitions", t.Partitions, "replication_factor", t.ReplicationFactor, "configs", t.Configs)
	return waitForLeaders(ctx, client, t.Name)
}

// waitForLeaders waits until every partition of a new topic has a leader, so the first
// produce does not fail.
func waitForLeaders(ctx context.Context, client *kafka.Client, topic string) error {
	for {
		meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err == nil && len(meta.Topics) == 1 && meta.Topics[0].Error == nil && len(meta.Topics[0].Partitions) > 0 {
			ready := true
			for _, p := range meta.Topics[0].Partitions {
				ready = ready && p.Error == nil && p.Leader.Host != ""
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: waiting for leaders: %w", topic, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Producer writes validated events to the events topic, keyed by tenant/app/guid, acknowledged
// by all in-sync replicas. It is safe for concurrent use; Close it to flush.
//
// Keys are placed by murmur2 (kafka.Murmur2Balancer), the Java client's default partitioner, so
// a producer written with the Java client puts a device on the same partition
// (TestMurmur2MatchesJava). Until migration 008 it was kafka.Hash (FNV-1a); see
// docs/ARCHITECTURE.md, "Partitioner", for what the switch means for open months.
//
// The writer is not idempotent: when a produce request reached the broker but its response was
// lost (a timeout, a broken connection), kafka-go retries it (MaxAttempts) and the batch is
// written twice. The counter's sets absorb such copies (TestDuplicateRecordsCountOnce).
type Producer struct {
	w *kafka.Writer
}

// NewProducer returns a producer for topic.
func NewProducer(n *Net, topic string) *Producer {
	return &Producer{w: &kafka.Writer{
		Addr:         kafka.TCP(n.Brokers...),
		Transport:    n.Transport(),
		Topic:        topic,
		Balancer:     EventsBalancer,
		RequiredAcks: kafka.RequireAll,
		Compression:  kafka.Lz4,
		BatchSize:    1000,
		BatchBytes:   8 << 20,
		BatchTimeout: 2 * time.Millisecond,
		MaxAttempts:  5,
		WriteTimeout: 10 * time.Second,
		ReadTimeout:  10 * time.Second,
	}}
}

// Produce writes events and returns nil only when Kafka confirmed every one of them. On error
// some may have been written: the counter's sets make such duplicates harmless.
func (p *Producer) Produce(ctx context.Context, events []event.Event) error {
	if len(events) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(events))
	// One buffer for all values and one header slice for all messages (kafka-go only reads
	// them): two allocations fewer per event.
	buf := make([]byte, 0, 128*len(events))
	for i := range events {
		e := &events[i]
		start := len(buf)
		var err error
		if buf, err = e.AppendBinary(buf); err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		msgs[i] = kafka.Message{
			Key:     e.PartitionKey(),
			Value:   buf[start:len(buf):len(buf)],
			Headers: schemaHeaders,
		}
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("%w: produce %d events: %w", ErrUnavailable, len(events), err)
	}
	return nil
}

// EventsBalancer places event keys on partitions: murmur2, as the Java client does. Nil keys
// never occur (every event has its tenant/app/guid key).
var EventsBalancer = kafka.Murmur2Balancer{Consistent: true}

// schemaHeaders are the headers of every event message. Shared: never modify.
var schemaHeaders = []kafka.Header{{Key: event.SchemaHeader, Value: []byte(event.SchemaV1)}}

// Close flushes and closes the producer.
func (p *Producer) Close() error { return p.w.Close() }

// Embedded is an in-process Kafka (kfake) for the embedded default and for fast tests. It keeps
// everything in memory unless started with a data dir.
type Embedded struct {
	c *kfake.Cluster
}

// StartEmbedded starts a single-broker in-process Kafka on 127.0.0.1:port (0 picks a free port).
func StartEmbedded(port int, dataDir string) (*Embedded, error) {
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.GroupMinSessionTimeout(time.Second)}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("start embedded kafka: %w", err)
	}
	return &Embedded{c: c}, nil
}

// Brokers are the addresses to connect to.
func (e *Embedded) Brokers() []string { return e.c.ListenAddrs() }

// Close stops the broker.
func (e *Embedded) Close() { e.c.Close() }

// SplitBrokers parses a comma-separated broker list, checking each is host:port.
func SplitBrokers(s string) ([]string, error) {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != ',' {
			continue
		}
		b := s[start:i]
		start = i + 1
		if b == "" {
			continue
		}
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" {
			return nil, fmt.Errorf("kafka broker %q: want host:port", b)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, fmt.Errorf("kafka broker %q: bad port", b)
		}
		out = append(out, b)
	}
	return out, nil
}
