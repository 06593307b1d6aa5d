// Package kafkatest stands in for a counter in tests that write mau_devices rows themselves:
// it puts records on a partition of the events topic (so the rows have real offsets, which is
// what rollup watermarks cover) and commits a consumer group's offsets past them (what the
// closer waits for). Tests only.
package kafkatest

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/maumeter/maumeter/pipeline/bus"
)

// Append writes n placeholder records to one partition of topic and returns the offset of the
// first. The records are not events: nothing consumes them.
func Append(ctx context.Context, brokers []string, topic string, partition, n int) (int64, error) {
	recs := make([]kafka.Record, n)
	for i := range recs {
		recs[i] = kafka.Record{Value: kafka.NewBytes([]byte("placeholder"))}
	}
	return AppendRecords(ctx, brokers, topic, partition, recs)
}

// AppendRecords writes recs to one partition of topic in one request and returns the offset of
// the first: what a producer's retry writes again when the broker stored a batch whose
// acknowledgement was lost, or what a producer with another partitioner writes.
func AppendRecords(ctx context.Context, brokers []string, topic string, partition int, recs []kafka.Record) (int64, error) {
	// A transport of its own: the shared default one may hold metadata older than the topic.
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: tr}
	resp, err := c.Produce(ctx, &kafka.ProduceRequest{Topic: topic, Partition: partition, RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(recs...)})
	if err != nil {
		return 0, fmt.Errorf("append to %s/%d: %w", topic, partition, err)
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("append to %s/%d: %w", topic, partition, resp.Error)
	}
	return resp.BaseOffset, nil
}

// Commit commits offsets (partition → next offset) of topic for group, as a counter that
// stored everything below them would (bus.CommitOffsets, which retries while the broker is
// still electing the group's coordinator: the first commit of a new group).
func Commit(ctx context.Context, brokers []string, group, topic string, offsets map[int]int64) error {
	return bus.CommitOffsets(ctx, bus.Plain(brokers), group, topic, offsets)
}

// DeleteRecords deletes the records of a partition below offset, as retention would (Kafka's
// DeleteRecords; kafka-go has no client for it, franz-go does), and returns the partition's new
// log start.
func DeleteRecords(ctx context.Context, brokers []string, topic string, partition int, offset int64) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return 0, fmt.Errorf("delete records: %w", err)
	}
	defer cl.Close()
	p := kmsg.NewDeleteRecordsRequestTopicPartition()
	p.Partition, p.Offset = int32(partition), offset
	rt := kmsg.NewDeleteRecordsRequestTopic()
	rt.Topic, rt.Partitions = topic, []kmsg.DeleteRecordsRequestTopicPartition{p}
	req := kmsg.NewPtrDeleteRecordsRequest()
	req.Topics, req.TimeoutMillis = []kmsg.DeleteRecordsRequestTopic{rt}, 10000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("delete records of %s/%d below %d: %w", topic, partition, offset, err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return 0, fmt.Errorf("delete records of %s/%d: unexpected answer %+v", topic, partition, resp)
	}
	rp := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
		return 0, fmt.Errorf("delete records of %s/%d below %d: %w", topic, partition, offset, err)
	}
	return rp.LowWatermark, nil
}
