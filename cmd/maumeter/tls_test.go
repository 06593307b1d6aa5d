package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/maumeter/maumeter/internal/secure"
	"github.com/maumeter/maumeter/internal/tlstest"
	"github.com/maumeter/maumeter/pipeline/api"
)

// TestServeHTTPS: with a certificate the listener speaks TLS 1.2+ only: a client that trusts
// the CA gets its answer, plain HTTP and TLS 1.1 are refused, and a certificate replaced on
// disk is served to the next connection without a restart.
func TestServeHTTPS(t *testing.T) {
	ca := tlstest.NewCA(t, "gateway-test")
	srv := ca.Server(t, "gateway")
	log := slog.New(slog.DiscardHandler)
	cert, err := secure.NewServerCert(srv.CertFile, srv.KeyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	cert.CheckEvery = 0 // look at the files on every handshake
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	go func() { done <- serveHTTP(ctx, "127.0.0.1:0", h, api.Timeouts{}, cert, time.Second, log, ready) }()
	addr := <-ready
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveHTTP: %v", err)
		}
	}()

	client := func(roots *x509.CertPool, maxVersion uint16) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: roots, MaxVersion: maxVersion}}}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	get := func(c *http.Client, url string) (*http.Response, error) {
		resp, err := c.Get(url)
		if err == nil {
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if string(b) != "ok" {
				t.Errorf("GET %s: body %q", url, b)
			}
		}
		return resp, err
	}
	resp, err := get(client(pool, 0), "https://"+addr+"/")
	if err != nil {
		t.Fatalf("HTTPS with the CA trusted: %v", err)
	}
	if v := resp.TLS.Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want 1.2 or later", v)
	}
	first := resp.TLS.PeerCertificates[0].SerialNumber

	if resp, err := http.Get("http://" + addr + "/"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP: %v %v, want 400", resp, err)
	} else {
		resp.Body.Close()
	}
	// The container health check, with the CA of a private certificate.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"healthcheck", "--url", "https://" + addr + "/", "--tls-ca-file", ca.CAFile}, 0},
		{[]string{"healthcheck", "--url", "https://" + addr + "/"}, 1},
	} {
		if code := run(context.Background(), time.Now, c.args, io.Discard, io.Discard); code != c.code {
			t.Errorf("%q: exit %d, want %d", c.args, code, c.code)
		}
	}
	if _, err := get(client(nil, 0), "https://"+addr+"/"); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("HTTPS without the CA: %v, want an unknown-authority error", err)
	}
	if _, err := get(client(pool, tls.VersionTLS11), "https://"+addr+"/"); err == nil {
		t.Error("TLS 1.1 accepted")
	}

	// Rotation: a new certificate and key replace the files (each renamed into place).
	next := ca.Server(t, "gateway-next")
	replace(t, srv.CertFile, next.CertPEM)
	replace(t, srv.KeyFile, next.KeyPEM)
	resp, err = get(client(pool, 0), "https://"+addr+"/")
	if err != nil {
		t.Fatalf("HTTPS after rotation: %v", err)
	}
	if got := resp.TLS.PeerCertificates[0].SerialNumber; got.Cmp(first) == 0 {
		t.Errorf("after rotation the old certificate (serial %v) is still served", got)
	}
	// A half-written pair (a key that does not match) keeps the working certificate.
	replace(t, srv.KeyFile, ca.Server(t, "stray").KeyPEM)
	if _, err := get(client(pool, 0), "https://"+addr+"/"); err != nil {
		t.Fatalf("HTTPS with a mismatched key on disk: %v, want the previous certificate served", err)
	}
}

func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestSecretsNeverFlags: a password flag is refused and says what to use; the passwords come
// from the environment or a file, both at once is refused, and no password shows in -h.
func TestSecretsNeverFlags(t *testing.T) {
	for _, args := range [][]string{
		{"count", "--clickhouse-password", "hunter2"},
		{"close", "--month", "2026-01", "-clickhouse-password=hunter2"},
		{"ingest", "--kafka-sasl-password=hunter2"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), time.Now, args, io.Discard, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), "is not accepted") || !strings.Contains(stderr.String(), "_PASSWORD or --") {
			t.Errorf("%q: exit %d, %s; want 2 and what to use instead", args, code, stderr.String())
		}
		if strings.Contains(stderr.String(), "hunter2") {
			t.Errorf("%q: the error echoes the password: %s", args, stderr.String())
		}
	}

	dir := t.TempDir()
	file := dir + "/pw"
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envClickHousePassword, "from-env")
	o := &options{chAddr: "127.0.0.1:9000", chDatabase: "maumeter", chUser: "default"}
	cfg, err := o.chConfig()
	if err != nil || cfg.Password != "from-env" {
		t.Errorf("password from the environment: %q, %v", cfg.Password, err)
	}
	o.chPasswordFile = file
	if _, err := o.chConfig(); err == nil || !errors.Is(err, errUsage) || strings.Contains(err.Error(), "from-") {
		t.Errorf("both env and file: %v, want a usage error naming neither secret", err)
	}
	os.Unsetenv(envClickHousePassword)
	if cfg, err := o.chConfig(); err != nil || cfg.Password != "from-file" {
		t.Errorf("password from the file: %q, %v", cfg.Password, err)
	}

	o = &options{kafkaBrokers: "127.0.0.1:9093"}
	o.kafka.saslMech, o.kafka.saslUser, o.kafka.passwordFile = "SCRAM-SHA-512", "maumeter", file
	n, err := o.kafkaNet()
	if err != nil || n.SASL == nil || n.SASL.Name() != "SCRAM-SHA-512" || n.TLS != nil {
		t.Errorf("kafka SASL from a file: %+v, %v", n, err)
	}
	o.kafka.tlsFiles.CAFile = dir + "/missing.pem"
	if _, err := o.kafkaNet(); err == nil || !strings.Contains(err.Error(), "kafka TLS CA file") {
		t.Errorf("missing CA file: %v", err)
	}
	o = &options{}
	o.kafka.tls = true
	if _, err := o.kafkaNet(); err == nil || !strings.Contains(err.Error(), "no --kafka-brokers") {
		t.Errorf("TLS without brokers: %v", err)
	}

	var help bytes.Buffer
	t.Setenv(envClickHousePassword, "env-secret-value")
	t.Setenv(envKafkaSASLPassword, "env-secret-value")
	run(context.Background(), time.Now, []string{"serve", "-h"}, io.Discard, &help)
	if strings.Contains(help.String(), "env-secret-value") || !strings.Contains(help.String(), "-clickhouse-password-file") {
		t.Errorf("serve -h shows a secret or lacks the password file flag:\n%s", help.String())
	}
}

// TestClickHouseTLSConfig: the TLS flags build the client configuration clickhouse-go gets.
func TestClickHouseTLSConfig(t *testing.T) {
	ca := tlstest.NewCA(t, "ch-test")
	cl := ca.Client(t, "maumeter")
	o := &options{chAddr: "127.0.0.1:9440", chDatabase: "maumeter", chUser: "default"}
	t.Setenv(envClickHousePassword, "")
	cfg, err := o.chConfig()
	if err != nil || cfg.TLS != nil {
		t.Fatalf("no TLS flags: %+v, %v", cfg.TLS, err)
	}
	o.chTLS = true
	if cfg, err = o.chConfig(); err != nil || cfg.TLS == nil || cfg.TLS.RootCAs != nil || cfg.TLS.MinVersion != tls.VersionTLS12 {
		t.Fatalf("--clickhouse-tls: %+v, %v; want TLS 1.2+ with the system roots", cfg.TLS, err)
	}
	o.chTLS = false
	o.chTLSFiles = secure.Files{CAFile: ca.CAFile, CertFile: cl.CertFile, KeyFile: cl.KeyFile}
	if cfg, err = o.chConfig(); err != nil || cfg.TLS == nil || cfg.TLS.RootCAs == nil || len(cfg.TLS.Certificates) != 1 {
		t.Fatalf("CA and client certificate: %+v, %v", cfg.TLS, err)
	}
	o.chTLSFiles.KeyFile = ""
	if _, err = o.chConfig(); err == nil || !strings.Contains(err.Error(), "give both files or neither") {
		t.Fatalf("certificate without key: %v", err)
	}
	o.chTLSFiles = secure.Files{CAFile: cl.KeyFile}
	if _, err = o.chConfig(); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("a key as the CA file: %v", err)
	}
}
