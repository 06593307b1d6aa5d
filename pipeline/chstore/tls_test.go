package chstore

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maumeter/maumeter/internal/secure"
	"github.com/maumeter/maumeter/internal/servicetest"
	"github.com/maumeter/maumeter/internal/tlstest"
)

// TestOpenTLS runs the store's connections (the pool, the migrations' database/sql handle)
// over TLS with a CA made in the test. The ClickHouse of the tests (chDB's clickhouse-local)
// cannot open its secure native port (SYSTEM START LISTEN TCP SECURE: "supports only TCP and
// HTTP listeners"; docs/OPERATIONS.md), so TLS ends in a proxy in front of its plain port: what
// is tested is clickhouse-go's TLS as maumeter configures it. An untrusted CA and a plaintext
// client are refused before any query is sent.
func TestOpenTLS(t *testing.T) {
	addr := servicetest.Require(t, servicetest.ClickHouse)[0]
	ca := tlstest.NewCA(t, "clickhouse-test")
	pair := ca.Server(t, "clickhouse")
	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var handshakes atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return // the server never sees a client that failed TLS
				}
				handshakes.Add(1)
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()

	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	db := fmt.Sprintf("chstore_tls_%d", time.Now().UnixNano())
	tlsCfg, err := secure.ClientTLS("clickhouse", secure.Files{CAFile: ca.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, Config{Addr: ln.Addr().String(), Database: db, TLS: tlsCfg}, log)
	if err != nil {
		t.Fatalf("open over TLS: %v", err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate over TLS: %v", err)
	}
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ?", db).Scan(&n); err != nil || n == 0 {
		t.Fatalf("tables of %s over TLS: %d, %v", db, n, err)
	}
	if handshakes.Load() == 0 {
		t.Fatal("no TLS handshake reached the proxy")
	}

	other, err := secure.ClientTLS("clickhouse", secure.Files{CAFile: tlstest.NewCA(t, "other").CAFile})
	if err != nil {
		t.Fatal(err)
	}
	before := handshakes.Load()
	if _, err := Open(ctx, Config{Addr: ln.Addr().String(), Database: db, TLS: other, DialTimeout: 3 * time.Second}, log); err == nil ||
		!strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("open with an untrusted CA: %v, want an unknown-authority error", err)
	}
	if _, err := Open(ctx, Config{Addr: ln.Addr().String(), Database: db, DialTimeout: 3 * time.Second}, log); err == nil {
		t.Error("open without TLS on the TLS port succeeded")
	}
	if got := handshakes.Load(); got != before {
		t.Errorf("%d handshakes of refused clients completed", got-before)
	}
}
