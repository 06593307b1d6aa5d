package chstore

import (
	"context"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// detached is the store's connection: a query, once sent, is never cancelled by its context.
//
// When a context ends mid-query, clickhouse-go sends a cancel packet and closes the socket at
// once. The embedded ClickHouse (chDB 26.7, clickhouse-local serving TCP) can then read a
// connection reset in a handler thread where the exception is not caught: std::terminate,
// SIGABRT, the server gone ("Terminate called for uncaught exception: Code: 210 ...
// Connection reset by peer", reproduced with cancelled inserts and reads; it ended two
// `make test` runs). So a context that has ended stops a call before it starts, and one that
// ends later lets the call finish: the server's max_execution_time (600 s, see options) bounds
// it. Callers check their context between calls (every retry loop does), so shutdown waits for
// at most the query in flight. A real ClickHouse server does not need this, and loses nothing
// by it.
type detached struct{ driver.Conn }

func (d detached) Select(ctx context.Context, dest any, query string, args ...any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.Conn.Select(context.WithoutCancel(ctx), dest, query, args...)
}

func (d detached) Query(ctx context.Context, query string, args ...any) (driver.Rows, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.Conn.Query(context.WithoutCancel(ctx), query, args...)
}

func (d detached) QueryRow(ctx context.Context, query string, args ...any) driver.Row {
	if err := ctx.Err(); err != nil {
		return errRow{err}
	}
	return d.Conn.QueryRow(context.WithoutCancel(ctx), query, args...)
}

func (d detached) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return d.Conn.PrepareBatch(context.WithoutCancel(ctx), query, opts...)
}

func (d detached) Exec(ctx context.Context, query string, args ...any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.Conn.Exec(context.WithoutCancel(ctx), query, args...)
}

// Ping answers when ctx ends even if the server does not (a readiness probe must not hang), but
// leaves the ping itself to finish on its own.
func (d detached) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- d.Conn.Ping(context.WithoutCancel(ctx)) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errRow is a row whose query never started.
type errRow struct{ err error }

func (r errRow) Err() error           { return r.err }
func (r errRow) Scan(...any) error    { return r.err }
func (r errRow) ScanStruct(any) error { return r.err }
