package kafkatest

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/internal/tlstest"
)

// SecureBroker is a Kafka broker of one test with a SASL_SSL listener (TLS with a certificate
// of the test's CA, and a client certificate of that CA required; SASL PLAIN with one user, and
// SCRAM-SHA-512 for the users AddScramUser adds) beside its PLAINTEXT one.
type SecureBroker struct {
	Addr      string // the SASL_SSL listener, 127.0.0.1:port
	PlainAddr string // the PLAINTEXT listener
	CA        *tlstest.CA
	Client    tlstest.Pair // a client certificate of CA: the listener requires one (mutual TLS)
	User      string
	Password  string
}

// StartSecure starts its own broker with scripts/kafka.sh (MAUMETER_KAFKA_SCRIPT, which
// scripts/with-services.sh exports; skipped without it unless MAUMETER_REQUIRE_SERVICES=1) and
// stops it when the test ends. About 5 s on a quiet machine.
func StartSecure(t testing.TB) *SecureBroker {
	t.Helper()
	script := servicetest.Require(t, "MAUMETER_KAFKA_SCRIPT")[0]
	ca := tlstest.NewCA(t, "kafka-test")
	srv := ca.Server(t, "broker")
	b := &SecureBroker{CA: ca, Client: ca.Client(t, "maumeter-client"), User: "maumeter", Password: "s3cret-" + fmt.Sprint(time.Now().UnixNano())}
	ports := freePorts(t, 3)
	b.PlainAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	b.Addr = fmt.Sprintf("127.0.0.1:%d", ports[2])
	// Not t.TempDir: scripts/run-logged.sh appends how the broker ended to its log just after
	// it stops, so the directory is removed with retries once the broker is stopped.
	dir, err := os.MkdirTemp("", "maumeter-kafka-tls-")
	if err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(dir, "sasl-ssl.properties")
	props := strings.Join([]string{
		"ssl.keystore.type=PEM",
		"ssl.keystore.certificate.chain=" + oneLine(srv.CertPEM),
		"ssl.keystore.key=" + oneLine(srv.KeyPEM),
		"ssl.truststore.type=PEM",
		"ssl.truststore.certificates=" + oneLine(ca.PEM),
		"listener.name.sasl_ssl.ssl.client.auth=required",
		"listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512",
		`listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_` +
			b.User + `="` + b.Password + `";`,
		// SCRAM users are added over the PLAINTEXT listener (AddScramUser).
		"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
		"",
	}, "\n")
	if err := os.WriteFile(extra, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "kafka")
	run := func(args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, script, args...)
		cmd.Env = append(os.Environ(), "KAFKA_EXTRA_LISTENER=SASL_SSL://"+b.Addr, "KAFKA_EXTRA_CONFIG="+extra)
		return cmd.CombinedOutput()
	}
	t.Cleanup(func() {
		if out, err := run("stop", data); err != nil {
			t.Logf("stop the test's broker: %v\n%s", err, out)
		}
		for i := 0; ; i++ {
			err := os.RemoveAll(dir)
			if err == nil || i == 50 {
				if err != nil {
					t.Logf("remove %s: %v", dir, err)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	started := time.Now()
	if out, err := run("start", data, fmt.Sprint(ports[0]), fmt.Sprint(ports[1])); err != nil {
		log, _ := os.ReadFile(filepath.Join(data, "kafka.log"))
		t.Fatalf("start a SASL_SSL broker: %v\n%s\n%s", err, out, tail(log, 4000))
	}
	t.Logf("SASL_SSL broker on %s up in %s", b.Addr, time.Since(started).Round(time.Millisecond))
	return b
}

// freePorts returns n distinct free loopback ports (free when asked: a race with another
// process is possible and makes the start fail loudly).
func freePorts(t testing.TB, n int) []int {
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// oneLine is PEM on one line, as a Java properties value takes it (Kafka's PEM parser ignores
// the missing line breaks).
func oneLine(pem []byte) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(string(pem), "-----\n", "----- ")), " ")
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// AddScramUser adds (or changes) a SCRAM-SHA-512 user, over the PLAINTEXT listener.
func (b *SecureBroker) AddScramUser(ctx context.Context, user, password string) error {
	salt := make([]byte, 16)
	rand.Read(salt)
	const iterations = 4096
	salted, err := pbkdf2.Key(sha512.New, password, salt, iterations, sha512.Size)
	if err != nil {
		return err
	}
	c := &kafka.Client{Addr: kafka.TCP(b.PlainAddr), Timeout: 10 * time.Second}
	resp, err := c.AlterUserScramCredentials(ctx, &kafka.AlterUserScramCredentialsRequest{
		Upsertions: []kafka.UserScramCredentialsUpsertion{{Name: user, Mechanism: kafka.ScramMechanismSha512,
			Iterations: iterations, Salt: salt, SaltedPassword: salted}},
	})
	if err != nil {
		return fmt.Errorf("add SCRAM user %s: %w", user, err)
	}
	for _, r := range resp.Results {
		if r.Error != nil {
			return fmt.Errorf("add SCRAM user %s: %w", user, r.Error)
		}
	}
	return nil
}
