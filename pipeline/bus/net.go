package bus

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// ErrNetConfig wraps errors in the Kafka connection settings (TLS files, SASL mechanism).
var ErrNetConfig = errors.New("kafka connection config")

// Net is how this process reaches Kafka: the brokers and, when configured, TLS and SASL. Build
// it once per process (NewNet, or &Net{Brokers: b} for plaintext) and hand the same *Net to
// every constructor that makes a kafka-go client: Dialer for readers and consumer groups,
// Transport for writers and clients, Client for admin requests. Without TLS and SASL both
// return nil, so kafka-go's defaults (DefaultDialer, DefaultTransport) apply unchanged.
type Net struct {
	Brokers []string
	TLS     *tls.Config    // nil: plaintext
	SASL    sasl.Mechanism // nil: no authentication

	once      sync.Once
	transport *kafka.Transport
}

// Plain is a Net of plaintext connections to brokers (tests, the in-process Kafka).
func Plain(brokers []string) *Net { return &Net{Brokers: brokers} }

// Secure reports whether connections use TLS or SASL.
func (n *Net) Secure() bool { return n.TLS != nil || n.SASL != nil }

// Dialer is the dialer of kafka.ReaderConfig and kafka.ConsumerGroupConfig; nil (kafka-go's
// DefaultDialer) for a plaintext Net.
func (n *Net) Dialer() *kafka.Dialer {
	if !n.Secure() {
		return nil
	}
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: n.TLS, SASLMechanism: n.SASL}
}

// Transport is the transport of kafka.Writer and kafka.Client, one per Net so that connections
// (and their TLS handshakes) are pooled; nil (kafka-go's DefaultTransport) for a plaintext Net.
// Its type is the interface, so a plaintext Net leaves the field truly nil.
func (n *Net) Transport() kafka.RoundTripper {
	if !n.Secure() {
		return nil
	}
	n.once.Do(func() {
		n.transport = &kafka.Transport{DialTimeout: 10 * time.Second, TLS: n.TLS, SASL: n.SASL}
	})
	return n.transport
}

// Client is an admin client of the brokers (metadata, offsets, topics).
func (n *Net) Client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(n.Brokers...), Timeout: 10 * time.Second, Transport: n.Transport()}
}

// SASL mechanisms NewSASL accepts.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// NewSASL returns the mechanism named (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; case does not
// matter) with these credentials; nil for an empty name.
func NewSASL(mechanism, username, password string) (sasl.Mechanism, error) {
	if mechanism == "" {
		if username != "" {
			return nil, fmt.Errorf("%w: a SASL username is set but no SASL mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", ErrNetConfig)
		}
		return nil, nil
	}
	if username == "" || password == "" {
		return nil, fmt.Errorf("%w: SASL %s needs a username and a password", ErrNetConfig, mechanism)
	}
	switch strings.ToUpper(mechanism) {
	case SASLPlain:
		return plain.Mechanism{Username: username, Password: password}, nil
	case SASLScramSHA256, SASLScramSHA512:
		algo := scram.SHA256
		if strings.ToUpper(mechanism) == SASLScramSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, username, password)
		if err != nil {
			return nil, fmt.Errorf("%w: SASL %s: %w", ErrNetConfig, mechanism, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("%w: SASL mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", ErrNetConfig, mechanism)
}
