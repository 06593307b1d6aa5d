package tenant

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, yaml string) *Catalog {
	t.Helper()
	c, err := Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNewKeyRoundTrip makes keys, writes their YAML lines into a catalogue as an operator
// would, and authenticates with them.
func TestNewKeyRoundTrip(t *testing.T) {
	base := "tenants:\n  - id: acme\n    plan: pro\n    purchased: 2026-01-01\n    apps: [acme-super, acme-lite]\n    testing_apps: [acme-qa]\n"
	acme, _ := mustParse(t, base).Tenant("acme")
	created := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	all, kAll, err := NewKey(rand.Reader, acme, nil, created)
	if err != nil {
		t.Fatal(err)
	}
	qa, kQA, err := NewKey(rand.Reader, acme, []string{"acme-qa"}, created)
	if err != nil {
		t.Fatal(err)
	}
	if all == qa || kAll.ID == kQA.ID {
		t.Fatal("two new keys are equal")
	}
	if !strings.HasPrefix(all, KeyPrefix) || len(all) != keyLen {
		t.Fatalf("key %q: want %s prefix and %d characters", all, KeyPrefix, keyLen)
	}
	if strings.Contains(kAll.YAML(), all[len(KeyPrefix)+keyIDLen+1:]) {
		t.Fatalf("catalogue entry %s holds the secret", kAll.YAML())
	}
	yaml := base + "    ingest_keys:\n      " + kAll.YAML() + "\n      " + kQA.YAML() + "\n"
	c := mustParse(t, yaml)
	if got := c.Keyring().Len(); got != 2 {
		t.Fatalf("keyring holds %d keys, want 2:\n%s", got, yaml)
	}
	k, err := c.Keyring().Authenticate(all)
	if err != nil || k.Tenant() != "acme" || !k.Allows("acme-super") || !k.Allows("acme-qa") {
		t.Fatalf("Authenticate(all-apps key) = %+v, %v", k, err)
	}
	k, err = c.Keyring().Authenticate(qa)
	if err != nil || k.Tenant() != "acme" || k.Allows("acme-super") || !k.Allows("acme-qa") || k.Created != "2026-11-25" {
		t.Fatalf("Authenticate(acme-qa key) = %+v, %v", k, err)
	}
}

func TestAuthenticateRefuses(t *testing.T) {
	c := mustParse(t, "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a]}\n")
	acme, _ := c.Tenant("acme")
	key, k, err := NewKey(bytes.NewReader(bytes.Repeat([]byte{0xab}, 40)), acme, nil, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ring, err := NewKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.Authenticate(key); err != nil {
		t.Fatalf("Authenticate(key) = %v", err)
	}
	other, _, _ := NewKey(rand.Reader, acme, nil, time.Time{})
	secretFlipped := key[:len(key)-1] + map[bool]string{true: "A", false: "B"}[key[len(key)-1] != 'A']
	f := func(name, key string, want error) {
		t.Helper()
		if got, err := ring.Authenticate(key); !errors.Is(err, want) || got != nil {
			t.Errorf("%s: Authenticate(%q) = %v, %v; want %v", name, key, got, err, want)
		}
	}
	f("empty", "", ErrKeyMalformed)
	f("no prefix", strings.TrimPrefix(key, KeyPrefix), ErrKeyMalformed)
	f("truncated", key[:len(key)-1], ErrKeyMalformed)
	f("too long", key+"x", ErrKeyMalformed)
	f("upper-case id", KeyPrefix+strings.ToUpper(key[len(KeyPrefix):len(KeyPrefix)+keyIDLen])+key[len(KeyPrefix)+keyIDLen:], ErrKeyMalformed)
	f("space in secret", key[:len(key)-1]+" ", ErrKeyMalformed)
	f("the hash itself", k.SHA256, ErrKeyMalformed)
	f("unknown id", other, ErrKeyUnknown)
	f("wrong secret", secretFlipped, ErrKeyMismatch)
}

func TestKeyCatalogueErrors(t *testing.T) {
	const h = "0000000000000000000000000000000000000000000000000000000000000000"
	f := func(keys, want string) {
		t.Helper()
		yaml := "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a], testing_apps: [q]" + keys + "}\n" +
			"  - {id: globex, plan: pro, purchased: 2026-01-01, apps: [g], ingest_keys: [{id: ffffffffffffffff, sha256: " + h + "}]}\n"
		_, err := Parse("cat.yaml", []byte(yaml))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("ingest_keys %s: error %v, want ErrInvalid naming %q", keys, err, want)
		}
	}
	f(", ingest_keys: [{id: 0123, sha256: "+h+"}]", `tenant "acme": ingest_keys: id`)
	f(", ingest_keys: [{id: 0123456789ABCDEF, sha256: "+h+"}]", `ingest_keys[0].id: "0123456789ABCDEF" must be 16 lower-case hex digits`)
	f(", ingest_keys: [{id: 0123456789abcdef, sha256: abc}]", `ingest_keys[0].sha256: "abc" must be 64 lower-case hex digits`)
	f(", ingest_keys: [{id: 0123456789abcdef}]", "sha256")
	f(", ingest_keys: [{id: 0123456789abcdef, sha256: "+h+", apps: [g]}]", `apps: "g" is not an app of the tenant`)
	f(", ingest_keys: [{id: 0123456789abcdef, sha256: "+h+", created: yesterday}]", "created")
	f(", ingest_keys: [{id: 0123456789abcdef, sha256: "+h+"}, {id: 0123456789abcdef, sha256: "+h+"}]", "listed twice")
	f(", ingest_keys: [{id: ffffffffffffffff, sha256: "+h+"}]", "ffffffffffffffff listed twice")
	f(", ingest_keys: [{id: 0123456789abcdef, sha256: "+h+", secret: x}]", "secret")
	f(", ingest_limit: {events_per_second: -1}", "ingest_limit.events_per_second")
	f(", ingest_limit: {events_per_second: 10, burst: 999}", "ingest_limit.burst")
}

// A key id is 16 random hex digits: about one in 1,800 has no letter, and some look like a float
// (1234e56789012345). Unquoted, as `keys new` prints them, YAML reads those as numbers; the
// catalogue takes them as written.
func TestKeyIDsThatYAMLReadsAsNumbers(t *testing.T) {
	const h = "0000000000000000000000000000000000000000000000000000000000000000"
	for _, id := range []string{"0123456789012345", "9999999999999999", "1234e56789012345", "1234567890123e45"} {
		yaml := "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a], ingest_keys: [{id: " + id + ", sha256: " + h + "}]}\n"
		c, err := Parse("t.yaml", []byte(yaml))
		if err != nil {
			t.Errorf("id %s: %v", id, err)
			continue
		}
		if got := c.Keys()[0].ID; got != id {
			t.Errorf("id %s read as %q", id, got)
		}
	}
}
