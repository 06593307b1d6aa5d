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

// Keys authenticate callers of the API. There are three kinds, told apart by their prefix and by
// the catalogue field that lists them:
//
//	mmk_<id>_<secret>  ingest key    tenant's ingest_keys    POST /v1/events for that tenant (SDKs)
//	mmr_<id>_<secret>  read key      tenant's read_keys      GET that tenant's MAU and invoices
//	mmo_<id>_<secret>  operator key  top-level operator_keys GET every tenant's MAU and invoices
//
// id is 16 hex digits (public: it names the key in logs, metrics and the catalogue) and secret is
// 32 random bytes in unpadded base64url. The catalogue stores only the id and the SHA-256 of the
// whole key, prefix included: a key of 256 random bits needs no slow hash, and a leaked catalogue
// gives nobody a key. Since the prefix is hashed, a key works only as the kind it was made as: an
// ingest key (shipped inside phone apps) never reads, a read key never ingests, and a catalogue
// line pasted under the wrong field authenticates nothing rather than something else. Several
// keys of a tenant live at once, so a key is rotated by adding the new one, moving its users to
// it, and removing the old one.

// Kind is what a key may do.
type Kind uint8

// The kinds of keys.
const (
	KindIngest   Kind = iota + 1 // mmk_: send events of one tenant
	KindRead                     // mmr_: read one tenant's MAU and invoices
	KindOperator                 // mmo_: read every tenant's MAU and invoices
)

// Key prefixes, one per kind.
const (
	KeyPrefix         = "mmk_" // ingest keys
	ReadKeyPrefix     = "mmr_"
	OperatorKeyPrefix = "mmo_"
)

// Prefix is the prefix of keys of kind k.
func (k Kind) Prefix() string {
	switch k {
	case KindIngest:
		return KeyPrefix
	case KindRead:
		return ReadKeyPrefix
	case KindOperator:
		return OperatorKeyPrefix
	}
	return ""
}

// String names the kind: ingest, read or operator.
func (k Kind) String() string {
	switch k {
	case KindIngest:
		return "ingest"
	case KindRead:
		return "read"
	case KindOperator:
		return "operator"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

const (
	keyIDLen     = 16 // hex digits
	keySecretLen = 43 // base64url digits of 32 bytes
	keyLen       = len(KeyPrefix) + keyIDLen + 1 + keySecretLen
)

// Authentication errors. The API answers all of them with the same 401; the distinction is for
// logs and metrics.
var (
	ErrKeyMalformed = errors.New("key is malformed")
	ErrKeyKind      = errors.New("key is of another kind") // e.g. an ingest key where a read key is needed
	ErrKeyUnknown   = errors.New("key id is not in the catalogue")
	ErrKeyMismatch  = errors.New("key secret does not match")
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
func (k *IngestKey) YAML() string { return entryYAML(k.ID, k.SHA256, k.Apps, k.Created, k.Note) }

// entryYAML is a key's catalogue entry as a one-line YAML flow mapping.
func entryYAML(id, sum string, apps []string, created, note string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "- {id: %s, sha256: %s", id, sum)
	if len(apps) > 0 {
		fmt.Fprintf(&b, ", apps: [%s]", strings.Join(apps, ", "))
	}
	if created != "" {
		fmt.Fprintf(&b, ", created: %s", created)
	}
	if note != "" {
		fmt.Fprintf(&b, ", note: %q", note)
	}
	b.WriteString("}")
	return b.String()
}

// validate checks k against its tenant t and binds it to t.
func (k *IngestKey) validate(t *Tenant) error {
	if err := checkEntry(k.ID, k.SHA256, k.Created, &k.hash); err != nil {
		return err
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

// checkEntry checks the fields every catalogue entry of a key has and decodes its hash.
func checkEntry(id, sum, created string, hash *[sha256.Size]byte) error {
	if len(id) != keyIDLen || !isLowerHex(id) {
		return fmt.Errorf("id: %q must be %d lower-case hex digits", id, keyIDLen)
	}
	if len(sum) != 2*sha256.Size || !isLowerHex(sum) {
		return fmt.Errorf("key %s: sha256: must be %d lower-case hex digits", id, 2*sha256.Size)
	}
	hex.Decode(hash[:], []byte(sum)) // cannot fail: checked above
	if created != "" {
		if _, err := time.Parse(time.DateOnly, created); err != nil {
			return fmt.Errorf("key %s: created: %q is not YYYY-MM-DD", id, created)
		}
	}
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

// parseKey returns the kind and the id of a well-formed key of any kind.
func parseKey(key string) (Kind, string, error) {
	if len(key) != keyLen || key[len(KeyPrefix)+keyIDLen] != '_' {
		return 0, "", ErrKeyMalformed
	}
	var kind Kind
	for _, k := range []Kind{KindIngest, KindRead, KindOperator} {
		if strings.HasPrefix(key, k.Prefix()) {
			kind = k
		}
	}
	if kind == 0 {
		return 0, "", ErrKeyMalformed
	}
	id := key[len(KeyPrefix) : len(KeyPrefix)+keyIDLen]
	if !isLowerHex(id) {
		return 0, "", ErrKeyMalformed
	}
	for i := len(KeyPrefix) + keyIDLen + 1; i < len(key); i++ {
		if c := key[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return 0, "", ErrKeyMalformed
		}
	}
	return kind, id, nil
}

// KindOf returns the kind of a well-formed key (ErrKeyMalformed otherwise), without looking it
// up: which keyring to ask.
func KindOf(key string) (Kind, error) {
	kind, _, err := parseKey(key)
	return kind, err
}

// newSecret makes a key of kind from 40 bytes of random: the key, its id and its hash.
func newSecret(random io.Reader, kind Kind) (key, id, sum string, err error) {
	var buf [8 + 32]byte
	if _, err := io.ReadFull(random, buf[:]); err != nil {
		return "", "", "", fmt.Errorf("new %s key: %w", kind, err)
	}
	id = hex.EncodeToString(buf[:8])
	key = kind.Prefix() + id + "_" + base64.RawURLEncoding.EncodeToString(buf[8:])
	return key, id, HashKey(key), nil
}

func dateOf(created time.Time) string {
	if created.IsZero() {
		return ""
	}
	return created.Format(time.DateOnly)
}

// NewKey makes a new ingest key for tenant t, restricted to apps (all of t's apps when empty),
// from 40 bytes of random (crypto/rand.Reader in production). It returns the key, to be shown
// once, and its catalogue entry.
func NewKey(random io.Reader, t *Tenant, apps []string, created time.Time) (string, *IngestKey, error) {
	key, id, sum, err := newSecret(random, KindIngest)
	if err != nil {
		return "", nil, err
	}
	k := &IngestKey{ID: id, SHA256: sum, Apps: slices.Clone(apps), Created: dateOf(created)}
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
// check failed (ErrKeyMalformed; ErrKeyKind for a read or operator key; ErrKeyUnknown,
// ErrKeyMismatch).
func (r *Keyring) Authenticate(key string) (*IngestKey, error) {
	kind, id, err := parseKey(key)
	if err != nil {
		return nil, err
	}
	if kind != KindIngest {
		return nil, fmt.Errorf("%w: a %s key cannot send events", ErrKeyKind, kind)
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

// ReadKey is a read key of a tenant (listed under its read_keys) or an operator key (listed
// under the catalogue's operator_keys), as the catalogue holds it. A read key reads its tenant's
// MAU and invoices, an operator key every tenant's; neither sends events.
type ReadKey struct {
	ID      string `yaml:"id"`      // public part of the key, 16 hex digits
	SHA256  string `yaml:"sha256"`  // hex SHA-256 of the whole key
	Created string `yaml:"created"` // YYYY-MM-DD, informational
	Note    string `yaml:"note"`    // informational, e.g. who holds the key

	kind   Kind
	tenant string // "" for an operator key
	hash   [sha256.Size]byte
}

// Kind is KindRead or KindOperator (zero before the key was validated).
func (k *ReadKey) Kind() Kind { return k.kind }

// Tenant is the id of the tenant whose data the key reads; "" for an operator key.
func (k *ReadKey) Tenant() string { return k.tenant }

// MayRead reports whether the key may read the MAU and invoices of tenant.
func (k *ReadKey) MayRead(tenant string) bool {
	return k.kind == KindOperator || k.kind == KindRead && k.tenant == tenant
}

// YAML is the key's catalogue entry on one line, to be added under its tenant's read_keys (a
// read key) or under operator_keys (an operator key).
func (k *ReadKey) YAML() string { return entryYAML(k.ID, k.SHA256, nil, k.Created, k.Note) }

// validate checks k and binds it to its kind and tenant (nil for an operator key).
func (k *ReadKey) validate(t *Tenant) error {
	if err := checkEntry(k.ID, k.SHA256, k.Created, &k.hash); err != nil {
		return err
	}
	k.kind, k.tenant = KindOperator, ""
	if t != nil {
		k.kind, k.tenant = KindRead, t.ID
	}
	return nil
}

// NewReadKey makes a new read key of tenant t from 40 bytes of random (crypto/rand.Reader in
// production). It returns the key, to be shown once, and its catalogue entry (for t's
// read_keys).
func NewReadKey(random io.Reader, t *Tenant, created time.Time) (string, *ReadKey, error) {
	return newReadKey(random, KindRead, t, created)
}

// NewOperatorKey makes a new operator key, which reads every tenant's MAU and invoices. It
// returns the key, to be shown once, and its catalogue entry (for operator_keys).
func NewOperatorKey(random io.Reader, created time.Time) (string, *ReadKey, error) {
	return newReadKey(random, KindOperator, nil, created)
}

func newReadKey(random io.Reader, kind Kind, t *Tenant, created time.Time) (string, *ReadKey, error) {
	key, id, sum, err := newSecret(random, kind)
	if err != nil {
		return "", nil, err
	}
	k := &ReadKey{ID: id, SHA256: sum, Created: dateOf(created)}
	if err := k.validate(t); err != nil {
		return "", nil, fmt.Errorf("new %s key: %w", kind, err)
	}
	return key, k, nil
}

// ReadKeyring finds the read or operator key a request presents. It is immutable and safe for
// concurrent use; a nil *ReadKeyring holds no key.
type ReadKeyring struct {
	byID map[string]*ReadKey
}

// NewReadKeyring returns a keyring of the given validated read and operator keys (from
// Catalog.ReadKeys, NewReadKey or NewOperatorKey). Ids must be unique.
func NewReadKeyring(keys ...*ReadKey) (*ReadKeyring, error) {
	r := &ReadKeyring{byID: make(map[string]*ReadKey, len(keys))}
	for _, k := range keys {
		if k.kind == 0 {
			return nil, fmt.Errorf("read keyring: key %s was not validated against a catalogue", k.ID)
		}
		if _, dup := r.byID[k.ID]; dup {
			return nil, fmt.Errorf("read keyring: key id %s listed twice", k.ID)
		}
		r.byID[k.ID] = k
	}
	return r, nil
}

// Len is the number of keys.
func (r *ReadKeyring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.byID)
}

// Authenticate returns the catalogue entry of a read or operator key, as Keyring.Authenticate
// does for ingest keys: ErrKeyMalformed, ErrKeyKind (an ingest key), ErrKeyUnknown (also when
// the id is listed as the other kind: an operator key's line under a tenant's read_keys is no
// key at all), ErrKeyMismatch. Authorization is the caller's: ReadKey.MayRead.
func (r *ReadKeyring) Authenticate(key string) (*ReadKey, error) {
	kind, id, err := parseKey(key)
	if err != nil {
		return nil, err
	}
	if kind == KindIngest {
		return nil, fmt.Errorf("%w: an ingest key cannot read", ErrKeyKind)
	}
	sum := sha256.Sum256([]byte(key))
	var k *ReadKey
	if r != nil {
		k = r.byID[id]
	}
	if k == nil || k.kind != kind {
		return nil, ErrKeyUnknown
	}
	if subtle.ConstantTimeCompare(sum[:], k.hash[:]) != 1 {
		return nil, ErrKeyMismatch
	}
	return k, nil
}
