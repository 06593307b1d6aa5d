package tenant

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Ingest keys authenticate POST /v1/events. A key is
//
//	mmk_<id>_<secret>
//
// where id is 16 hex digits (public: it names the key in logs, metrics and the catalogue) and
// secret is 32 random bytes in unpadded base64url. The catalogue stores only the id and the
// SHA-256 of the whole key: a key of 256 random bits needs no slow hash, and a leaked catalogue
// gives nobody a key. Several keys of a tenant live at once, so a key is rotated by adding the
// new one, moving the SDKs to it, and removing the old one.

// KeyPrefix starts every ingest key.
const KeyPrefix = "mmk_"

const (
	keyIDLen     = 16 // hex digits
	keySecretLen = 43 // base64url digits of 32 bytes
	keyLen       = len(KeyPrefix) + keyIDLen + 1 + keySecretLen
)

// Authentication errors. The ingest API answers all of them with the same 401; the distinction
// is for logs and metrics.
var (
	ErrKeyMalformed = errors.New("ingest key is malformed")
	ErrKeyUnknown   = errors.New("ingest key id is not in the catalogue")
	ErrKeyMismatch  = errors.New("ingest key secret does not match")
)

// IngestKey is one ingest key of a tenant as the catalogue holds it.
type IngestKey struct {
	ID      string   `yaml:"id"`      // public part of the key, 16 hex digits
	SHA256  string   `yaml:"sha256"`  // hex SHA-256 of the whole key
	Apps    []string `yaml:"apps"`    // the apps it may send events for; empty: all of the tenant's
	Created string   `yaml:"created"` // YYYY-MM-DD, informational
	Note    string   `yaml:"note"`    // informational, e.g. who holds the key

	tenant string
	hash   [sha256.Size]byte
	apps   map[string]bool // nil: every app of the tenant
}

// Tenant is the id of the tenant the key belongs to.
func (k *IngestKey) Tenant() string { return k.tenant }

// Allows reports whether the key may send events for app. It does not check that app is an app
// of the tenant: the catalogue does.
func (k *IngestKey) Allows(app string) bool { return k.apps == nil || k.apps[app] }

// YAML is the key's catalogue entry on one line, to be added under its tenant's ingest_keys.
func (k *IngestKey) YAML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "- {id: %s, sha256: %s", k.ID, k.SHA256)
	if len(k.Apps) > 0 {
		fmt.Fprintf(&b, ", apps: [%s]", strings.Join(k.Apps, ", "))
	}
	if k.Created != "" {
		fmt.Fprintf(&b, ", created: %s", k.Created)
	}
	if k.Note != "" {
		fmt.Fprintf(&b, ", note: %q", k.Note)
	}
	b.WriteString("}")
	return b.String()
}

// validate checks k against its tenant t and binds it to t.
func (k *IngestKey) validate(t *Tenant) error {
	if len(k.ID) != keyIDLen || !isLowerHex(k.ID) {
		return fmt.Errorf("id: %q must be %d lower-case hex digits", k.ID, keyIDLen)
	}
	if len(k.SHA256) != 2*sha256.Size || !isLowerHex(k.SHA256) {
		return fmt.Errorf("key %s: sha256: must be %d lower-case hex digits", k.ID, 2*sha256.Size)
	}
	hex.Decode(k.hash[:], []byte(k.SHA256)) // cannot fail: checked above
	if k.Created != "" {
		if _, err := time.Parse(time.DateOnly, k.Created); err != nil {
			return fmt.Errorf("key %s: created: %q is not YYYY-MM-DD", k.ID, k.Created)
		}
	}
	k.apps = nil
	if len(k.Apps) > 0 {
		k.apps = make(map[string]bool, len(k.Apps))
		for _, a := range k.Apps {
			if known, _ := t.App(a); !known {
				return fmt.Errorf("key %s: apps: %q is not an app of the tenant", k.ID, a)
			}
			k.apps[a] = true
		}
	}
	k.tenant = t.ID
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// HashKey is the catalogue form of a key: hex SHA-256 of the whole key.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// keyID returns the id part of a well-formed key.
func keyID(key string) (string, error) {
	if len(key) != keyLen || !strings.HasPrefix(key, KeyPrefix) || key[len(KeyPrefix)+keyIDLen] != '_' {
		return "", ErrKeyMalformed
	}
	id := key[len(KeyPrefix) : len(KeyPrefix)+keyIDLen]
	if !isLowerHex(id) {
		return "", ErrKeyMalformed
	}
	for i := len(KeyPrefix) + keyIDLen + 1; i < len(key); i++ {
		if c := key[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", ErrKeyMalformed
		}
	}
	return id, nil
}

// NewKey makes a new ingest key for tenant t, restricted to apps (all of t's apps when empty),
// from 40 bytes of random (crypto/rand.Reader in production). It returns the key, to be shown
// once, and its catalogue entry.
func NewKey(random io.Reader, t *Tenant, apps []string, created time.Time) (string, *IngestKey, error) {
	var buf [8 + 32]byte
	if _, err := io.ReadFull(random, buf[:]); err != nil {
		return "", nil, fmt.Errorf("new ingest key: %w", err)
	}
	key := KeyPrefix + hex.EncodeToString(buf[:8]) + "_" + base64.RawURLEncoding.EncodeToString(buf[8:])
	k := &IngestKey{ID: hex.EncodeToString(buf[:8]), SHA256: HashKey(key), Apps: slices.Clone(apps)}
	if !created.IsZero() {
		k.Created = created.Format(time.DateOnly)
	}
	if err := k.validate(t); err != nil {
		return "", nil, fmt.Errorf("new ingest key for tenant %s: %w", t.ID, err)
	}
	return key, k, nil
}

// Keyring finds the ingest key a request presents. It is immutable and safe for concurrent use.
type Keyring struct {
	byID map[string]*IngestKey
}

// NewKeyring returns a keyring of the given validated keys (from Catalog.Keys or NewKey).
// Ids must be unique.
func NewKeyring(keys ...*IngestKey) (*Keyring, error) {
	r := &Keyring{byID: make(map[string]*IngestKey, len(keys))}
	for _, k := range keys {
		if k.tenant == "" {
			return nil, fmt.Errorf("keyring: key %s was not validated against a catalogue", k.ID)
		}
		if _, dup := r.byID[k.ID]; dup {
			return nil, fmt.Errorf("keyring: key id %s listed twice", k.ID)
		}
		r.byID[k.ID] = k
	}
	return r, nil
}

// Len is the number of keys.
func (r *Keyring) Len() int { return len(r.byID) }

// Authenticate returns the catalogue entry of key. It looks the entry up by the key's public id
// and compares the SHA-256 of the key with the stored one in constant time; the error says which
// check failed (ErrKeyMalformed, ErrKeyUnknown, ErrKeyMismatch).
func (r *Keyring) Authenticate(key string) (*IngestKey, error) {
	id, err := keyID(key)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(key))
	k, ok := r.byID[id]
	if !ok {
		return nil, ErrKeyUnknown
	}
	if subtle.ConstantTimeCompare(sum[:], k.hash[:]) != 1 {
		return nil, ErrKeyMismatch
	}
	return k, nil
}
