package bus_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/internal/secure"
	"github.com/maumeter/maumeter/internal/tlstest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
)

// TestSASLSSL runs the product's Kafka clients against a real broker that takes only SASL_SSL
// with a client certificate on the address they are given: topic creation, the event producer,
// a consumer group reading and committing, and the offsets the closer reads, with SASL PLAIN and
// SCRAM-SHA-512. A wrong password, an untrusted CA, no client certificate and a plaintext client
// all fail, each with an error that says why.
func TestSASLSSL(t *testing.T) {
	b := kafkatest.StartSecure(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tlsCfg, err := secure.ClientTLS("kafka", secure.Files{CAFile: b.CA.CAFile, CertFile: b.Client.CertFile, KeyFile: b.Client.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	mech, err := bus.NewSASL("plain", b.User, b.Password)
	if err != nil {
		t.Fatal(err)
	}
	n := &bus.Net{Brokers: []string{b.Addr}, TLS: tlsCfg, SASL: mech}
	log := slog.New(slog.DiscardHandler)
	topic := fmt.Sprintf("tls-%d", time.Now().UnixNano())
	if err := bus.EnsureTopic(ctx, n, bus.Topic{Name: topic, Partitions: 2, ReplicationFactor: 1}, log); err != nil {
		t.Fatalf("create a topic over SASL_SSL: %v", err)
	}
	p := bus.NewProducer(n, topic)
	now := time.Now().UTC().Truncate(time.Millisecond)
	var sent []event.Event
	for i := range 50 {
		sent = append(sent, event.Event{TenantID: "acme", AppID: "acme-super", GUID: fmt.Sprintf("guid-%d", i), Type: event.Search, TS: now})
	}
	if err := p.Produce(ctx, sent); err != nil {
		t.Fatalf("produce over SASL_SSL: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	end, err := bus.EndOffsets(ctx, n, topic)
	if err != nil {
		t.Fatalf("end offsets over SASL_SSL: %v", err)
	}
	if end[0]+end[1] != int64(len(sent)) {
		t.Fatalf("end offsets %v, want %d messages in all", end, len(sent))
	}

	group := topic + "-group"
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: n.Brokers, Dialer: n.Dialer(), GroupID: group, Topic: topic,
		StartOffset: kafka.FirstOffset, MaxWait: 200 * time.Millisecond})
	got := map[string]bool{}
	for len(got) < len(sent) {
		m, err := rd.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("consume over SASL_SSL after %d messages: %v", len(got), err)
		}
		e, err := event.Decode(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		got[e.GUID] = true
		if err := rd.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit over SASL_SSL: %v", err)
		}
	}
	rd.Close()
	lag, err := bus.Lag(ctx, n, group, topic)
	if err != nil || lag != 0 {
		t.Fatalf("lag over SASL_SSL: %d, %v; want 0 after consuming everything", lag, err)
	}

	// SCRAM-SHA-512 on the same listener, for a user added to the broker.
	if err := b.AddScramUser(ctx, "scram-user", "scram-"+b.Password); err != nil {
		t.Fatal(err)
	}
	scram, err := bus.NewSASL("SCRAM-SHA-512", "scram-user", "scram-"+b.Password)
	if err != nil {
		t.Fatal(err)
	}
	sn := &bus.Net{Brokers: n.Brokers, TLS: tlsCfg, SASL: scram}
	var parts []int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// The new credential reaches the broker's cache through the metadata log, not at once.
		if parts, err = bus.Partitions(ctx, sn, topic); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(parts) != 2 {
		t.Fatalf("metadata over SCRAM-SHA-512: %v, %v", parts, err)
	}
	if err := bus.NewJSONPublisher(sn, topic, "test").Publish(ctx, "k", map[string]int{"scram": 1}); err != nil {
		t.Fatalf("publish over SCRAM-SHA-512: %v", err)
	}
	wrongScram, _ := bus.NewSASL("SCRAM-SHA-512", "scram-user", "not-"+b.Password)

	wrongPass, _ := bus.NewSASL("PLAIN", b.User, "not-"+b.Password)
	other, err := secure.ClientTLS("kafka", secure.Files{CAFile: tlstest.NewCA(t, "other").CAFile, CertFile: b.Client.CertFile, KeyFile: b.Client.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	noCert, err := secure.ClientTLS("kafka", secure.Files{CAFile: b.CA.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		n    *bus.Net
		want string
	}{
		{"wrong password", &bus.Net{Brokers: n.Brokers, TLS: tlsCfg, SASL: wrongPass}, "SASL Authentication Failed"},
		{"wrong SCRAM password", &bus.Net{Brokers: n.Brokers, TLS: tlsCfg, SASL: wrongScram}, "SASL Authentication Failed"},
		{"untrusted CA", &bus.Net{Brokers: n.Brokers, TLS: other, SASL: mech}, "certificate signed by unknown authority"},
		{"no client certificate", &bus.Net{Brokers: n.Brokers, TLS: noCert, SASL: mech}, "tls: bad certificate"},
		{"no TLS", &bus.Net{Brokers: n.Brokers, SASL: mech}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			_, err := bus.Partitions(cctx, c.n, topic)
			if err == nil {
				t.Fatal("metadata succeeded")
			}
			if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Errorf("metadata: %v; want an error saying %q", err, c.want)
			}
			t.Logf("metadata: %v", err)
			w := bus.NewProducer(c.n, topic)
			defer w.Close()
			err = w.Produce(cctx, sent[:1])
			if !errors.Is(err, bus.ErrUnavailable) {
				t.Fatalf("produce: %v, want ErrUnavailable", err)
			}
			if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Errorf("produce: %v; want an error saying %q", err, c.want)
			}
			dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			if conn, err := c.n.Dialer().DialContext(dctx, "tcp", b.Addr); err == nil {
				conn.Close()
				if c.n.TLS != nil {
					t.Errorf("dialer: connected")
				}
			} else if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Errorf("dialer: %v; want an error saying %q", err, c.want)
			}
		})
	}
}

// TestNetPlain: a Net without TLS and SASL leaves kafka-go's defaults in place.
func TestNetPlain(t *testing.T) {
	n := bus.Plain([]string{"127.0.0.1:9092"})
	if n.Secure() || n.Dialer() != nil || n.Transport() != nil || n.Client().Transport != nil {
		t.Fatalf("plain Net: secure %v, dialer %v, transport %v", n.Secure(), n.Dialer(), n.Transport())
	}
	s := &bus.Net{Brokers: n.Brokers, TLS: &tls.Config{MinVersion: tls.VersionTLS12}}
	if d := s.Dialer(); d == nil || d.TLS != s.TLS {
		t.Fatalf("TLS Net: dialer %+v", d)
	}
	if s.Transport() == nil || s.Transport() != s.Transport() || s.Client().Transport != s.Transport() {
		t.Fatal("TLS Net: want one transport, shared by its clients")
	}
}

func TestNewSASL(t *testing.T) {
	for _, c := range []struct{ mech, user, pass, wantName, wantErr string }{
		{"", "", "", "", ""},
		{"PLAIN", "u", "p", "PLAIN", ""},
		{"scram-sha-256", "u", "p", "SCRAM-SHA-256", ""},
		{"SCRAM-SHA-512", "u", "p", "SCRAM-SHA-512", ""},
		{"GSSAPI", "u", "p", "", `SASL mechanism "GSSAPI": want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{"PLAIN", "u", "", "", "SASL PLAIN needs a username and a password"},
		{"", "u", "", "", "a SASL username is set but no SASL mechanism"},
	} {
		m, err := bus.NewSASL(c.mech, c.user, c.pass)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, bus.ErrNetConfig) {
				t.Errorf("NewSASL(%q, %q): %v, want %q", c.mech, c.user, err, c.wantErr)
			}
		case err != nil:
			t.Errorf("NewSASL(%q): %v", c.mech, err)
		case c.wantName == "" && m != nil, c.wantName != "" && (m == nil || m.Name() != c.wantName):
			t.Errorf("NewSASL(%q) = %v, want %s", c.mech, m, c.wantName)
		}
	}
}
