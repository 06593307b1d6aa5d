package tenant

import (
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Watch reads the catalogue at path every interval until ctx ends and applies each new content:
// it calls apply with the catalogue parsed with opts, or with the error that kept it from
// loading (invalid: the caller keeps what is in force). A content is applied once two checks in
// a row read it, and it differs from the content applied last (the first is applied on the
// second check): a file rewritten in place (os.WriteFile truncates, then writes) can be read
// half-written, and a half-written file that parses would drop keys. Writers should still
// replace the file atomically (a temporary file renamed over it). A file that cannot be read is
// reported at every check. Ingest and read keys are rotated through it without a restart.
func Watch(ctx context.Context, path string, interval time.Duration, apply func(*Catalog, error), opts ...Option) {
	var s settled
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(path)
		if err != nil {
			s.pending = nil
			apply(nil, err)
			continue
		}
		if s.read(data) {
			apply(Parse(path, data, opts...))
		}
	}
}

// settled decides when a file read again and again is to be applied: once the same content is
// read twice in a row, and it is not the content applied last.
type settled struct {
	applied, pending *[sha256.Size]byte
}

// read takes the content of one check and says whether to apply it now.
func (s *settled) read(data []byte) bool {
	sum := sha256.Sum256(data)
	switch {
	case s.applied != nil && *s.applied == sum:
		s.pending = nil // (back to) the content in force
		return false
	case s.pending != nil && *s.pending == sum:
		s.applied, s.pending = &sum, nil
		return true
	default:
		s.pending = &sum // new: applied if the next check reads it again
		return false
	}
}
