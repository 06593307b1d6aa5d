// Package maumeter is the Go client of the maumeter ingest API (POST /v1/events, see
// schemas/openapi.yaml): for servers that relay the events of super apps' mini-program
// containers. It batches events by count, bytes and time, gzips them, retries what the gateway
// did not acknowledge (429, 503, network errors) with exponential backoff and full jitter that
// honours Retry-After, keeps one UUIDv7 event id per event across retries, reports every event's
// fate (sent, rejected with its reason and field, or failed), and can keep its queue in a file
// for offline periods. It depends on the standard library only.
//
// A Client is safe for concurrent use. Close it: Close flushes within a deadline and stops the
// one goroutine the Client runs.
package maumeter

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits of the gateway (schemas/openapi.yaml).
const (
	MaxBatchEvents = 1000
	MaxBatchBytes  = 1 << 20
)

// Config configures a Client. Endpoint and IngestKey are required.
type Config struct {
	Endpoint  string // the gateway's base URL, e.g. https://mau.example.com
	IngestKey string // the tenant's ingest key
	// HTTPClient sends the requests (default: a client with a 30 s timeout).
	HTTPClient *http.Client
	// BatchEvents and BatchBytes bound a request (defaults and maxima: 1,000 events, 512 KiB of
	// JSON before gzip, under the gateway's 1 MiB); Linger is how long a partial batch waits for
	// more events (default 1 s).
	BatchEvents int
	BatchBytes  int
	Linger      time.Duration
	// QueueCapacity bounds the events held (default 100,000): Track returns ErrQueueFull beyond
	// it, never dropping silently.
	QueueCapacity int
	// QueueFile, when set, keeps the queue in this file so that events tracked while offline
	// survive a restart of the process: a new Client on the same file sends them.
	QueueFile string
	// MinBackoff and MaxBackoff bound the exponential backoff between retries (defaults 200 ms
	// and 30 s); a Retry-After longer than the backoff is honoured.
	MinBackoff, MaxBackoff time.Duration
	// DisableGzip sends bodies uncompressed.
	DisableGzip bool
	// OnResult, when set, is called once per event when its fate is known (from the Client's
	// goroutine: return quickly).
	OnResult func(Result)
}

// Status is the fate of an event.
type Status int

const (
	// Sent: the gateway acknowledged the event (Kafka stored it): it is counted.
	Sent Status = iota + 1
	// Rejected: the gateway refused the event on its own (Reason, Field): sending it again
	// would not help.
	Rejected
	// Failed: the whole request was refused for a reason retrying cannot fix (a wrong ingest
	// key, a body the gateway cannot read): Err says which.
	Failed
)

func (s Status) String() string {
	switch s {
	case Sent:
		return "sent"
	case Rejected:
		return "rejected"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Result is the fate of one event.
type Result struct {
	Event   Event
	Status  Status
	Reason  string // a rejection reason of schemas/openapi.yaml, e.g. ts_too_old; "" unless Rejected
	Field   string
	Message string
	// Err is set unless Sent: errors.Is(Err, ErrPOCCapReached) for a POC tenant-month that is
	// full (the device is new and the plan has no pay-as-you-go).
	Err error
}

// Reasons are the rejection reasons of schemas/openapi.yaml (Result.Reason).
var Reasons = []string{"bad_json", "missing_field", "bad_field", "bad_event_type", "ts_too_old", "ts_in_future",
	"unknown_tenant", "unknown_app", "tenant_mismatch", "app_not_allowed", "poc_cap_reached"}

var (
	// ErrPOCCapReached is the error of an event rejected with poc_cap_reached: the tenant's POC
	// plan has counted its maximum of devices this month. Upgrade the plan to count more.
	ErrPOCCapReached = errors.New("maumeter: poc_cap_reached: the POC plan's device cap is reached for this month")
	// ErrRejected is the error of every other rejected event.
	ErrRejected = errors.New("maumeter: event rejected")
	// ErrQueueFull is returned by Track when QueueCapacity events wait.
	ErrQueueFull = errors.New("maumeter: queue full")
	// ErrClosed is returned by Track and Flush after Close.
	ErrClosed = errors.New("maumeter: client closed")
)

// PendingError is returned by Flush and Close when events are still queued at the deadline
// (with a QueueFile they stay in the file for the next Client).
type PendingError struct{ Pending int }

func (e *PendingError) Error() string {
	return fmt.Sprintf("maumeter: %d events not sent before the deadline", e.Pending)
}

// Client sends events to the gateway.
type Client struct {
	cfg  Config
	url  string
	rand *rand.Rand

	mu       sync.Mutex
	q        queue
	closed   bool
	flushing int           // Flush calls waiting: send partial batches at once
	wake     chan struct{} // a new event or a flush: the sender looks again
	changed  chan struct{} // closed and replaced whenever events leave the queue
	lastErr  error         // the last error of a request, for PendingError's callers

	stop context.CancelFunc // ends the sender (Close)
	done chan struct{}
}

// New starts a Client. With a QueueFile, events a previous Client left there are sent first.
func New(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" || cfg.IngestKey == "" {
		return nil, errors.New("maumeter: Endpoint and IngestKey are required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.BatchEvents <= 0 || cfg.BatchEvents > MaxBatchEvents {
		cfg.BatchEvents = MaxBatchEvents
	}
	if cfg.BatchBytes <= 0 || cfg.BatchBytes > MaxBatchBytes*3/4 {
		cfg.BatchBytes = 512 << 10
	}
	if cfg.Linger <= 0 {
		cfg.Linger = time.Second
	}
	if cfg.QueueCapacity <= 0 {
		cfg.QueueCapacity = 100_000
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	c := &Client{cfg: cfg, url: strings.TrimRight(cfg.Endpoint, "/") + "/v1/events",
		rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		wake: make(chan struct{}, 1), changed: make(chan struct{}), done: make(chan struct{})}
	if cfg.QueueFile != "" {
		fq, err := openFileQueue(cfg.QueueFile)
		if err != nil {
			return nil, err
		}
		c.q = fq
	} else {
		c.q = &memQueue{}
	}
	ctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	go c.run(ctx)
	return c, nil
}

// Track queues e for sending. It sets e.ID to a new UUIDv7 when empty, and returns an error
// (and queues nothing) when e is invalid (ErrInvalidEvent), the queue is full (ErrQueueFull),
// the queue file cannot be written, or the Client is closed.
func (c *Client) Track(e Event) error {
	if e.ID == "" {
		e.ID = NewEventID()
	}
	if err := e.validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(e.wire())
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.q.len() >= c.cfg.QueueCapacity:
		return ErrQueueFull
	}
	if err := c.q.push(raw); err != nil {
		return err
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

// Pending is the number of events queued and not yet acknowledged.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.q.len()
}

// Flush sends every queued event, waiting until the queue is empty or ctx ends
// (*PendingError).
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.mu.Unlock()
	return c.flush(ctx)
}

func (c *Client) flush(ctx context.Context) error {
	c.mu.Lock()
	c.flushing++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.flushing--
		c.mu.Unlock()
	}()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	for {
		c.mu.Lock()
		n, changed, last := c.q.len(), c.changed, c.lastErr
		c.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-c.done:
			return &PendingError{Pending: n}
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", &PendingError{Pending: n}, last)
			}
			return &PendingError{Pending: n}
		}
	}
}

// Close stops taking events, sends what is queued until ctx ends, then stops the Client's
// goroutine (abandoning a request in flight: its events stay queued, and in the QueueFile if
// there is one) and closes the queue file. It returns a *PendingError when events were left.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	c.mu.Unlock()
	err := c.flush(ctx)
	c.stop()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.q.len(); n > 0 && err == nil {
		err = &PendingError{Pending: n}
	}
	if cerr := c.q.close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// run is the sender: it takes batches from the head of the queue and sends each until the
// gateway answers it, in order.
func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	var lingerSince time.Time
	for {
		c.mu.Lock()
		n := c.q.len()
		urgent := c.flushing > 0 || c.closed
		c.mu.Unlock()
		switch {
		case n == 0:
			lingerSince = time.Time{}
			select {
			case <-c.wake:
				continue
			case <-ctx.Done():
				return
			}
		case n < c.cfg.BatchEvents && !urgent:
			if lingerSince.IsZero() {
				lingerSince = time.Now()
			}
			if wait := c.cfg.Linger - time.Since(lingerSince); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-c.wake:
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
				t.Stop()
				continue
			}
		}
		lingerSince = time.Time{}
		c.mu.Lock()
		batch := c.q.peek(c.cfg.BatchEvents, c.cfg.BatchBytes)
		c.mu.Unlock()
		results, err := c.deliver(ctx, batch)
		if err != nil { // ctx ended: the batch stays queued
			return
		}
		c.mu.Lock()
		ackErr := c.q.ack(len(batch))
		if ackErr == nil {
			ackErr = c.q.sync()
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if ackErr != nil {
			c.setErr(ackErr)
		}
		if c.cfg.OnResult != nil {
			for _, r := range results {
				c.cfg.OnResult(r)
			}
		}
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// deliver sends batch until the gateway gives every event a fate, retrying what it did not
// acknowledge. It returns an error only when ctx ends.
func (c *Client) deliver(ctx context.Context, batch [][]byte) ([]Result, error) {
	body, err := c.body(batch)
	if err != nil { // cannot happen with bytes.Buffer; treat as permanent
		return c.failAll(batch, err), nil
	}
	for attempt := 0; ; attempt++ {
		results, retryAfter, err := c.post(ctx, batch, body)
		if err == nil {
			c.setErr(nil)
			return results, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.setErr(err)
		wait := c.backoff(attempt)
		if retryAfter > wait {
			wait = retryAfter
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// backoff is full jitter: uniform in [0, min(MaxBackoff, MinBackoff·2^attempt)], at least a
// millisecond.
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.cfg.MaxBackoff
	if attempt < 30 {
		ceil = min(c.cfg.MaxBackoff, c.cfg.MinBackoff<<attempt)
	}
	c.mu.Lock()
	d := time.Duration(c.rand.Int64N(int64(ceil) + 1))
	c.mu.Unlock()
	return max(d, time.Millisecond)
}

func (c *Client) body(batch [][]byte) ([]byte, error) {
	var b bytes.Buffer
	var w io.Writer = &b
	var zw *gzip.Writer
	if !c.cfg.DisableGzip {
		zw = gzip.NewWriter(&b)
		w = zw
	}
	for _, raw := range batch {
		if _, err := w.Write(raw); err != nil {
			return nil, err
		}
		if _, err := w.Write([]byte{'\n'}); err != nil {
			return nil, err
		}
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
}

// retryable is a response that acknowledged nothing and may be sent again as it is.
type retryable struct {
	status int
	msg    string
}

func (e *retryable) Error() string { return fmt.Sprintf("gateway answered %d: %s", e.status, e.msg) }

// post sends one request. A nil error means every event has its fate in the results; an error
// means the request may be sent again (after retryAfter when the gateway said so).
func (c *Client) post(ctx context.Context, batch [][]byte, body []byte) ([]Result, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return c.failAll(batch, err), 0, nil
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+c.cfg.IngestKey)
	if !c.cfg.DisableGzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, 0, err // network: nothing known acknowledged; the event ids make a resend safe
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, 0, err
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		var ir ingestResponse
		if err := json.Unmarshal(data, &ir); err != nil {
			return nil, 0, fmt.Errorf("gateway answered 200 with an unreadable body: %w", err)
		}
		return c.results(batch, ir), 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable ||
		resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500:
		return nil, retryAfter(resp.Header.Get("Retry-After")), &retryable{status: resp.StatusCode, msg: errorMessage(data)}
	default:
		// 400, 401, 413, 415: the request as a whole cannot be accepted as it is.
		return c.failAll(batch, fmt.Errorf("maumeter: gateway refused the request: %d %s", resp.StatusCode, errorMessage(data))), 0, nil
	}
}

// ingestResponse is schemas/openapi.yaml's IngestResponse.
type ingestResponse struct {
	Accepted int         `json:"accepted"`
	Rejected []rejection `json:"rejected"`
}

// rejection is schemas/openapi.yaml's Rejection.
type rejection struct {
	Index   int    `json:"index"`
	Reason  string `json:"reason"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// errorBody is schemas/openapi.yaml's Error (and LimitError).
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

func errorMessage(data []byte) string {
	var e errorBody
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		if e.Code != "" {
			return e.Code + ": " + e.Error
		}
		return e.Error
	}
	return strings.TrimSpace(string(data[:min(len(data), 200)]))
}

func (c *Client) results(batch [][]byte, ir ingestResponse) []Result {
	out := make([]Result, len(batch))
	for i, raw := range batch {
		out[i] = Result{Event: decode(raw), Status: Sent}
	}
	for _, r := range ir.Rejected {
		if r.Index < 0 || r.Index >= len(out) {
			continue
		}
		err := ErrRejected
		if r.Reason == "poc_cap_reached" {
			err = ErrPOCCapReached
		}
		o := &out[r.Index]
		o.Status, o.Reason, o.Field, o.Message = Rejected, r.Reason, r.Field, r.Message
		o.Err = fmt.Errorf("%w: %s: %s", err, r.Reason, r.Message)
	}
	return out
}

func (c *Client) failAll(batch [][]byte, err error) []Result {
	out := make([]Result, len(batch))
	for i, raw := range batch {
		out[i] = Result{Event: decode(raw), Status: Failed, Err: err}
	}
	return out
}

func decode(raw []byte) Event {
	var w wireEvent
	json.Unmarshal(raw, &w)
	return w.event()
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; 0 when absent or invalid.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
