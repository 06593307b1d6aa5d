package bus

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/pkg/event"
)

// partitionJava is a single-file Java program that places keys (hex) with the Java client's
// own code path for keyed records: BuiltInPartitioner.partitionForKey, that is
// Utils.toPositive(Utils.murmur2(key)) % numPartitions.
const partitionJava = `import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import java.util.HexFormat;

public class Partition {
    // args: partition counts (comma-separated), then keys in hex; prints one line per count.
    public static void main(String[] args) {
        for (String n : args[0].split(",")) {
            StringBuilder line = new StringBuilder();
            for (int i = 1; i < args.length; i++) {
                line.append(BuiltInPartitioner.partitionForKey(HexFormat.of().parseHex(args[i]), Integer.parseInt(n))).append(' ');
            }
            System.out.println(line.toString().trim());
        }
    }
}
`

// javaClasspath finds java and the Kafka client jars of scripts/kafka.sh's cache; it skips the
// test when they are absent, and fails it when MAUMETER_REQUIRE_SERVICES=1 (make test, CI).
func javaClasspath(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("MAUMETER_CACHE_DIR")
	if cache == "" {
		cache = filepath.Join("..", "..", ".cache")
	}
	libs := filepath.Join(cache, "kafka", "libs")
	clients, _ := filepath.Glob(filepath.Join(libs, "kafka-clients-*.jar"))
	slf4j, _ := filepath.Glob(filepath.Join(libs, "slf4j-api-*.jar"))
	_, javaErr := exec.LookPath("java")
	var missing []string
	if javaErr != nil {
		missing = append(missing, "java (apt-get install -y openjdk-17-jre-headless)")
	}
	if len(clients) != 1 || len(slf4j) != 1 {
		missing = append(missing, fmt.Sprintf("kafka-clients and slf4j-api jars in %s (scripts/kafka.sh fetch)", libs))
	}
	if len(missing) > 0 {
		if os.Getenv("MAUMETER_REQUIRE_SERVICES") == "1" {
			t.Fatalf("needs %s", strings.Join(missing, " and "))
		}
		t.Skipf("needs %s", strings.Join(missing, " and "))
	}
	return clients[0] + string(os.PathListSeparator) + slf4j[0]
}

// TestMurmur2MatchesJava: for event keys and partition counts, the partition the events
// producer's balancer picks is the one the Java client picks, computed by the Java client.
func TestMurmur2MatchesJava(t *testing.T) {
	cp := javaClasspath(t)
	src := filepath.Join(t.TempDir(), "Partition.java")
	if err := os.WriteFile(src, []byte(partitionJava), 0o644); err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	for i := range 12 {
		e := event.Event{TenantID: fmt.Sprintf("tenant-%d", i%3), AppID: "super.app_" + strconv.Itoa(i), GUID: fmt.Sprintf("%08x-guid-%d", i*2654435761, i)}
		keys = append(keys, e.PartitionKey())
	}
	keys = append(keys, []byte("a"), []byte("ab"), []byte("abc"), []byte("abcd"), []byte("acme/acme-super/éü"), bytes.Repeat([]byte{0xff}, 37))
	counts := []int{1, 2, 3, 8, 12, 64, 100}
	args := []string{"-cp", cp, src, strings.Trim(strings.Join(strings.Fields(fmt.Sprint(counts)), ","), "[]")}
	for _, k := range keys {
		args = append(args, hex.EncodeToString(k))
	}
	out, err := exec.Command("java", args...).Output() // one JVM: about 3 s
	if err != nil {
		t.Fatalf("java: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(counts) {
		t.Fatalf("java printed %d lines for %d partition counts: %q", len(lines), len(counts), out)
	}
	for j, n := range counts {
		javaParts := strings.Fields(lines[j])
		if len(javaParts) != len(keys) {
			t.Fatalf("java printed %d partitions for %d keys: %q", len(javaParts), len(keys), lines[j])
		}
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for i, k := range keys {
			got := EventsBalancer.Balance(kafka.Message{Key: k}, parts...)
			if want, _ := strconv.Atoi(javaParts[i]); got != want {
				t.Errorf("key %q over %d partitions: kafka-go %d, Java client %d", k, n, got, want)
			}
		}
	}
}

func testBrokers(t *testing.T) []string {
	t.Helper()
	return []string{servicetest.Require(t, servicetest.Kafka)[0]}
}

func testTopic(t *testing.T) string {
	return fmt.Sprintf("test.bus.%s.%d", t.Name(), time.Now().UnixNano())
}

var quiet = slog.New(slog.DiscardHandler)

// TestReaderOffsetsContiguous backs the counter's gap check (a fetched offset beyond the next
// expected one means deleted records): on a delete-policy topic written by the events producer
// in LZ4 batches, kafka-go's reader hands out every offset in order from wherever it starts,
// also from the middle of a compressed batch, with no gap and no repeat.
func TestReaderOffsetsContiguous(t *testing.T) {
	brokers := testBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := testTopic(t)
	if err := EnsureTopic(ctx, Plain(brokers), Topic{Name: topic, Partitions: 1, ReplicationFactor: 1}, quiet); err != nil {
		t.Fatal(err)
	}
	p := NewProducer(Plain(brokers), topic)
	defer p.Close()
	const batches, per = 3, 700
	for b := range batches {
		events := make([]event.Event, per)
		for i := range events {
			events[i] = event.Event{TenantID: "acme", AppID: "app", GUID: fmt.Sprintf("g-%d-%d", b, i), Type: event.Open, MiniProgramID: "mp", TS: time.Now()}
		}
		if err := p.Produce(ctx, events); err != nil {
			t.Fatal(err)
		}
	}
	for _, start := range []int64{0, per + per/2, 2*per - 1} { // a batch start, mid-batch, a batch's last record
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		if err := r.SetOffset(start); err != nil {
			t.Fatal(err)
		}
		for want := start; want < batches*per; want++ {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				t.Fatalf("from %d: fetch %d: %v", start, want, err)
			}
			if m.Offset != want {
				t.Fatalf("reading from %d: got offset %d, want %d", start, m.Offset, want)
			}
		}
		r.Close()
	}
}

// TestTopicSettings: created topics carry their configs; the events topic check refuses a
// short retention and a compacted topic with messages that name the topic, its setting and the
// minimum; a replication factor above the brokers is refused before Kafka is asked.
func TestTopicSettings(t *testing.T) {
	brokers := testBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	short := testTopic(t)
	if err := EnsureTopic(ctx, Plain(brokers), Topic{Name: short, Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{"retention.ms": "3600000", "min.insync.replicas": "1"}}, quiet); err != nil {
		t.Fatal(err)
	}
	s, err := DescribeTopic(ctx, Plain(brokers), short)
	if err != nil || s.Retention != time.Hour || s.MinInSyncReplicas != 1 || s.CleanupPolicy != "delete" || s.RetentionBytes != -1 {
		t.Fatalf("DescribeTopic = %+v, %v; want 1h, min ISR 1, delete, no size limit", s, err)
	}
	_, err = CheckEventsTopic(ctx, Plain(brokers), short, 888*time.Hour)
	want := fmt.Sprintf("events topic retention too short: topic %s keeps records 1h0m0s (retention.ms=3600000), less than the 888h0m0s the counters need", short)
	if !errors.Is(err, ErrShortRetention) || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("CheckEventsTopic(888h) = %v\nwant prefix %s", err, want)
	}
	if _, err := CheckEventsTopic(ctx, Plain(brokers), short, time.Hour); err != nil {
		t.Errorf("CheckEventsTopic(1h) = %v, want nil", err)
	}
	compacted := testTopic(t) + ".c"
	if err := EnsureTopic(ctx, Plain(brokers), Topic{Name: compacted, Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}, quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckEventsTopic(ctx, Plain(brokers), compacted, time.Hour); !errors.Is(err, ErrCompacted) || !strings.Contains(err.Error(), compacted) {
		t.Errorf("CheckEventsTopic(compacted) = %v, want ErrCompacted naming the topic", err)
	}
	if _, err := CheckEventsTopic(ctx, Plain(brokers), "no.such.topic", time.Hour); !errors.Is(err, ErrTopicNotFound) && err == nil {
		t.Errorf("CheckEventsTopic(missing) = nil, want an error")
	}
	err = EnsureTopic(ctx, Plain(brokers), Topic{Name: testTopic(t) + ".rf", Partitions: 1, ReplicationFactor: 3}, quiet)
	if !errors.Is(err, ErrTooFewBrokers) || !strings.Contains(err.Error(), "replication factor 3 needs at least 3 brokers, the cluster has 1") {
		t.Errorf("EnsureTopic(RF 3 on one broker) = %v, want ErrTooFewBrokers", err)
	}
}
