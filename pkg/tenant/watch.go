package tenant

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"time"
)

// Watch reads the catalogue at path every interval until ctx ends and, whenever its content
// changed (the first check always applies it), calls apply with the catalogue parsed with opts,
// or with the error that kept it from loading (unreadable or invalid: the caller keeps what is
// in force). Ingest and read keys are rotated through it without a restart.
func Watch(ctx context.Context, path string, interval time.Duration, apply func(*Catalog, error), opts ...Option) {
	var last [sha256.Size]byte
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
			apply(nil, err)
			continue
		}
		sum := sha256.Sum256(data)
		if bytes.Equal(sum[:], last[:]) {
			continue
		}
		last = sum
		apply(Parse(path, data, opts...))
	}
}
