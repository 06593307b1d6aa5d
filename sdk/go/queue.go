package maumeter

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// queue holds the events not yet acknowledged by the gateway, oldest first. Batches are sent
// in order and acknowledged whole, so events leave from the head only. The Client serializes
// calls.
type queue interface {
	push(raw []byte) error                 // append one event (its JSON)
	peek(maxEvents, maxBytes int) [][]byte // the oldest events, within the bounds (at least one)
	ack(n int) error                       // the oldest n events are done (sent or rejected)
	len() int
	sync() error // make what was pushed and acked durable (file queue)
	close() error
}

// memQueue is the in-memory queue: lost when the process ends.
type memQueue struct{ items [][]byte }

func (q *memQueue) push(raw []byte) error { q.items = append(q.items, raw); return nil }
func (q *memQueue) peek(maxEvents, maxBytes int) [][]byte {
	return head(q.items, maxEvents, maxBytes)
}
func (q *memQueue) ack(n int) error {
	clear(q.items[:n])
	q.items = q.items[n:]
	if len(q.items) == 0 {
		q.items = nil
	}
	return nil
}
func (q *memQueue) len() int     { return len(q.items) }
func (q *memQueue) sync() error  { return nil }
func (q *memQueue) close() error { return nil }

// head returns the first events of items whose JSON array stays within maxBytes (at least one
// event, whatever its size: the gateway refuses it with 413 if it is too large).
func head(items [][]byte, maxEvents, maxBytes int) [][]byte {
	size := 2 // [ ]
	n := 0
	for n < len(items) && n < maxEvents {
		add := len(items[n]) + 1 // the comma or newline
		if n > 0 && size+add > maxBytes {
			break
		}
		size += add
		n++
	}
	return items[:n]
}

// fileQueue is the persistent queue: an append-only log in one file, of lines
//
//	E <event JSON>   an event tracked
//	A <n>            the oldest n pending events are done
//
// Every line is written with one write(2) as it happens, so a killed process loses nothing the
// SDK accepted; sync (at every acknowledged batch and at Close) fsyncs, so a power loss loses at
// most what was tracked since. A torn last line (a crash mid-write) is dropped on open. The log
// is compacted (rewritten to a temporary file, fsynced, renamed) on open and when the acked
// lines outweigh the pending ones.
type fileQueue struct {
	path  string
	f     *os.File
	mem   memQueue
	acked int // events acknowledged since the last compaction
}

func openFileQueue(path string) (*fileQueue, error) {
	q := &fileQueue{path: path}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("maumeter: queue file: %w", err)
	}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // a torn last line: never acknowledged to the app as durable
		}
		line := data[:i]
		data = data[i+1:]
		switch {
		case bytes.HasPrefix(line, []byte("E ")):
			raw := line[2:]
			if !json.Valid(raw) {
				return nil, fmt.Errorf("maumeter: queue file %s: a corrupt event line", path)
			}
			q.mem.items = append(q.mem.items, bytes.Clone(raw))
		case bytes.HasPrefix(line, []byte("A ")):
			n, err := strconv.Atoi(string(line[2:]))
			if err != nil || n < 0 || n > len(q.mem.items) {
				return nil, fmt.Errorf("maumeter: queue file %s: a corrupt acknowledgement line %q", path, line)
			}
			q.mem.ack(n)
		case len(line) == 0:
		default:
			return nil, fmt.Errorf("maumeter: queue file %s: an unknown line %.40q", path, line)
		}
	}
	if err := q.compact(); err != nil {
		return nil, err
	}
	return q, nil
}

// compact rewrites the log to the pending events only.
func (q *fileQueue) compact() error {
	tmp := q.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("maumeter: queue file: %w", err)
	}
	w := bufio.NewWriter(f)
	for _, raw := range q.mem.items {
		w.WriteString("E ")
		w.Write(raw)
		w.WriteByte('\n')
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, q.path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(q.path))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maumeter: queue file: compact: %w", err)
	}
	if q.f != nil {
		q.f.Close()
	}
	if q.f, err = os.OpenFile(q.path, os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return fmt.Errorf("maumeter: queue file: %w", err)
	}
	q.acked = 0
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}

func (q *fileQueue) writeLine(b []byte) error {
	if _, err := q.f.Write(b); err != nil {
		return fmt.Errorf("maumeter: queue file: %w", err)
	}
	return nil
}

func (q *fileQueue) push(raw []byte) error {
	line := make([]byte, 0, len(raw)+3)
	line = append(append(append(line, "E "...), raw...), '\n')
	if err := q.writeLine(line); err != nil {
		return err
	}
	return q.mem.push(raw)
}

func (q *fileQueue) peek(maxEvents, maxBytes int) [][]byte { return q.mem.peek(maxEvents, maxBytes) }

func (q *fileQueue) ack(n int) error {
	if err := q.writeLine([]byte("A " + strconv.Itoa(n) + "\n")); err != nil {
		return err
	}
	q.mem.ack(n)
	q.acked += n
	if q.acked > 10_000 && q.acked > q.mem.len() {
		return q.compact()
	}
	return nil
}

func (q *fileQueue) len() int { return q.mem.len() }

func (q *fileQueue) sync() error {
	if err := q.f.Sync(); err != nil {
		return fmt.Errorf("maumeter: queue file: %w", err)
	}
	return nil
}

func (q *fileQueue) close() error {
	err := q.sync()
	if cerr := q.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("maumeter: queue file: %w", cerr)
	}
	return err
}
