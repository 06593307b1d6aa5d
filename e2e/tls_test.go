package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maumeter/maumeter/internal/kafkatest"
	"github.com/maumeter/maumeter/internal/secure"
	"github.com/maumeter/maumeter/pipeline/bus"
)

// TestSecurePipeline runs ingest and the counter as processes against a broker that takes only
// SASL_SSL on the address they are given (TLS with the test's CA, SASL PLAIN, the password in
// MAUMETER_KAFKA_SASL_PASSWORD), both serving HTTPS with a certificate of the test's CA. The
// events sent over HTTPS are counted exactly; migrate with a wrong password or an untrusted CA
// fails, saying why.
func TestSecurePipeline(t *testing.T) {
	b := kafkatest.StartSecure(t)
	start := time.Now()
	dir := t.TempDir()
	gw := b.CA.Server(t, "maumeter-http")
	tenants := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(tenants, fmt.Appendf(nil, catalogue, "", "", "", ""), 0o644); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("tls_%d", time.Now().UnixNano())
	topic, group := "e2e."+id, "e2e-count-"+id
	env := []string{
		"MAUMETER_KAFKA_BROKERS=" + b.Addr,
		"MAUMETER_KAFKA_TLS_CA_FILE=" + b.CA.CAFile,
		"MAUMETER_KAFKA_TLS_CERT_FILE=" + b.Client.CertFile,
		"MAUMETER_KAFKA_TLS_KEY_FILE=" + b.Client.KeyFile,
		"MAUMETER_KAFKA_SASL_MECHANISM=PLAIN",
		"MAUMETER_KAFKA_SASL_USERNAME=" + b.User,
		"MAUMETER_KAFKA_SASL_PASSWORD=" + b.Password,
		"MAUMETER_CLICKHOUSE_ADDR=" + clickhouseA,
		"MAUMETER_CLICKHOUSE_DATABASE=e2e_" + id,
		"MAUMETER_EVENTS_TOPIC=" + topic,
		"MAUMETER_CAPS_TOPIC=e2e.caps." + id,
		"MAUMETER_COUNT_GROUP=" + group,
		"MAUMETER_ROLLUPS_TOPIC=e2e.rollups." + id,
		"MAUMETER_TENANTS=" + tenants,
		"MAUMETER_SESSION_TIMEOUT=6s",
		"MAUMETER_CHECKPOINT_INTERVAL=1s",
		"MAUMETER_TLS_CERT_FILE=" + gw.CertFile,
		"MAUMETER_TLS_KEY_FILE=" + gw.KeyFile,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Refused before anything is created: each error says why.
	for _, c := range []struct {
		name, want string
		env        []string
	}{
		{"wrong password", "SASL Authentication Failed", []string{"MAUMETER_KAFKA_SASL_PASSWORD=wrong"}},
		// TLS with the system's roots, which do not hold the test's CA.
		{"untrusted CA", "certificate signed by unknown authority", []string{"MAUMETER_KAFKA_TLS=true", "MAUMETER_KAFKA_TLS_CA_FILE="}},
	} {
		cmd := exec.CommandContext(ctx, binary, "migrate")
		cmd.Env = append(append(os.Environ(), env...), c.env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("migrate with a %s: %v, want a failure saying %q:\n%s", c.name, err, c.want, out)
		}
	}

	keys, readKeys := map[string]string{}, map[string]string{}
	var entries []any
	readEntries := map[string]string{}
	for _, tenant := range tenantOrder {
		var e string
		keys[tenant], e = newKey(t, ctx, env, tenant)
		entries = append(entries, e)
		readKeys[tenant], readEntries[tenant] = newKey(t, ctx, env, tenant, "--read")
	}
	if err := os.WriteFile(tenants, withReadKeys(t, fmt.Sprintf(catalogue, entries...), readEntries, ""), 0o644); err != nil {
		t.Fatal(err)
	}
	runOnce(t, ctx, env, "migrate")
	ingestAddr, countAddr := freeAddr(t), freeAddr(t)
	ingest := startProc(t, "ingest", env, "ingest", "--http-addr", ingestAddr)
	counter := startProc(t, "count", env, "count", "--http-addr", countAddr)
	pool := x509.NewCertPool()
	pool.AddCert(b.CA.Cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, p := range []struct {
		proc *proc
		addr string
	}{{ingest, ingestAddr}, {counter, countAddr}} {
		waitHTTPS(t, client, p.proc, "https://"+p.addr+"/healthz")
		if resp, err := http.Get("http://" + p.addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("%s answers plain HTTP", p.proc.name)
			}
		}
	}
	t.Logf("broker, migrate and both roles up over SASL_SSL and HTTPS in %s", time.Since(start).Round(time.Millisecond))

	tr := generate(rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2)), clockNow(), 300)
	for i, batch := range tr.batches {
		var body bytes.Buffer
		want := 0
		for _, l := range batch {
			body.WriteString(l.json + "\n")
			if l.reason == "" {
				want++
			}
		}
		var r struct{ Accepted int }
		if code, err := postJSON(client, "https://"+ingestAddr+"/v1/events", keys[batch[0].tenant], body.Bytes(), &r); err != nil || code != http.StatusOK || r.Accepted != want {
			t.Fatalf("batch %d over HTTPS: %d %v, accepted %d, want %d", i, code, err, r.Accepted, want)
		}
	}
	n := &bus.Net{Brokers: []string{b.Addr}, TLS: mustTLS(t, secure.Files{CAFile: b.CA.CAFile, CertFile: b.Client.CertFile, KeyFile: b.Client.KeyFile})}
	n.SASL, _ = bus.NewSASL("PLAIN", b.User, b.Password)
	for lag := int64(-1); lag != 0; time.Sleep(200 * time.Millisecond) {
		if ctx.Err() != nil || counter.exited() {
			t.Fatalf("counter %d messages behind: %v\n%s", lag, ctx.Err(), counter.tail())
		}
		lag, _ = bus.Lag(ctx, n, group, topic)
	}
	checked := 0
	for tenant, months := range tr.truth {
		for month, set := range months {
			var body struct{ MAU uint64 }
			url := fmt.Sprintf("https://%s/v1/tenants/%s/mau?month=%s", countAddr, tenant, month)
			if code, err := getWith(client, url, readKeys[tenant], &body); err != nil || code != http.StatusOK || body.MAU != uint64(len(set)) {
				t.Errorf("%s %s over HTTPS: %d %v, MAU %d, want %d", tenant, month, code, err, body.MAU, len(set))
			}
			checked++
		}
	}
	t.Logf("%d events in %d batches over HTTPS and SASL_SSL; %d tenant-months exact; %s in all",
		tr.events, len(tr.batches), checked, time.Since(start).Round(time.Millisecond))
}

func mustTLS(t *testing.T, f secure.Files) *tls.Config {
	t.Helper()
	c, err := secure.ClientTLS("kafka", f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitHTTPS(t *testing.T, c *http.Client, p *proc, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			t.Fatalf("%s exited before serving %s:\n%s", p.name, url, p.tail())
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not serve %s (%v):\n%s", p.name, url, last, p.tail())
}

func postJSON(c *http.Client, url, key string, body []byte, v any) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	return do(c, req, key, v)
}

func getWith(c *http.Client, url, key string, v any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	return do(c, req, key, v)
}

func do(c *http.Client, req *http.Request, key string, v any) (int, error) {
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("%s", data)
	}
	return resp.StatusCode, json.Unmarshal(data, v)
}
