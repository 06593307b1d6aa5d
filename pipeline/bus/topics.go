package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Errors of CheckEventsTopic.
var (
	// ErrShortRetention: the topic deletes records sooner than the counters may need them.
	ErrShortRetention = errors.New("events topic retention too short")
	// ErrCompacted: the topic is compacted, so its offsets have gaps the counter would take for
	// lost records, and compaction would drop events of the same device.
	ErrCompacted = errors.New("events topic is compacted")
)

// TopicSettings are the effective settings of an existing topic (its own or the broker's
// defaults) that the pipeline depends on.
type TopicSettings struct {
	Retention         time.Duration // retention.ms; negative: kept forever
	RetentionBytes    int64         // retention.bytes per partition; negative: no size limit
	CleanupPolicy     string        // cleanup.policy, e.g. "delete" or "compact"
	MinInSyncReplicas int           // min.insync.replicas
}

// DescribeTopic reads a topic's effective settings from the brokers (DescribeConfigs).
func DescribeTopic(ctx context.Context, n *Net, topic string) (TopicSettings, error) {
	client := n.Client()
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
		ConfigNames: []string{"retention.ms", "retention.bytes", "cleanup.policy", "min.insync.replicas"},
	}}})
	if err != nil {
		return TopicSettings{}, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	if len(resp.Resources) != 1 {
		return TopicSettings{}, fmt.Errorf("describe topic %s: %d resources in the answer", topic, len(resp.Resources))
	}
	if err := resp.Resources[0].Error; err != nil {
		return TopicSettings{}, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	s := TopicSettings{Retention: -1, RetentionBytes: -1, CleanupPolicy: "delete", MinInSyncReplicas: 1}
	for _, e := range resp.Resources[0].ConfigEntries {
		var perr error
		switch e.ConfigName {
		case "retention.ms":
			var ms int64
			ms, perr = strconv.ParseInt(e.ConfigValue, 10, 64)
			s.Retention = time.Duration(ms) * time.Millisecond
			if ms < 0 {
				s.Retention = -1
			}
		case "retention.bytes":
			s.RetentionBytes, perr = strconv.ParseInt(e.ConfigValue, 10, 64)
		case "cleanup.policy":
			s.CleanupPolicy = e.ConfigValue
		case "min.insync.replicas":
			s.MinInSyncReplicas, perr = strconv.Atoi(e.ConfigValue)
		}
		if perr != nil {
			return TopicSettings{}, fmt.Errorf("describe topic %s: %s=%q: %w", topic, e.ConfigName, e.ConfigValue, perr)
		}
	}
	return s, nil
}

// CheckEventsTopic checks that the events topic keeps records at least minRetention and is not
// compacted (ErrShortRetention, ErrCompacted, with the topic, its setting and the minimum in
// the message). The caller decides whether a short retention is fatal.
func CheckEventsTopic(ctx context.Context, n *Net, topic string, minRetention time.Duration) (TopicSettings, error) {
	s, err := DescribeTopic(ctx, n, topic)
	if err != nil {
		return s, err
	}
	if strings.Contains(s.CleanupPolicy, "compact") {
		return s, fmt.Errorf("%w: topic %s has cleanup.policy=%s; it must be delete (offsets of a compacted topic have gaps and compaction drops events)",
			ErrCompacted, topic, s.CleanupPolicy)
	}
	if s.Retention >= 0 && s.Retention < minRetention {
		return s, fmt.Errorf("%w: topic %s keeps records %s (retention.ms=%d), less than the %s the counters need "+
			"(--close-window + --close-grace): a counter stopped longer than that (a ClickHouse outage) would lose events; "+
			"raise it (kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config retention.ms=%d)",
			ErrShortRetention, topic, s.Retention, s.Retention.Milliseconds(), minRetention, topic, minRetention.Milliseconds())
	}
	return s, nil
}
