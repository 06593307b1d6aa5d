package tenant

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
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

// TestReadKeysRoundTrip makes a read key of each tenant and an operator key, writes their lines
// where `maumeter keys new` says, and checks who may read what.
func TestReadKeysRoundTrip(t *testing.T) {
	base := "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a]%s}\n  - {id: globex, plan: pro, purchased: 2026-01-01, apps: [g]%s}\n%s"
	c0 := mustParse(t, fmt.Sprintf(base, "", "", ""))
	acme, _ := c0.Tenant("acme")
	globex, _ := c0.Tenant("globex")
	created := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	acmeKey, acmeEntry, err := NewReadKey(rand.Reader, acme, created)
	if err != nil {
		t.Fatal(err)
	}
	globexKey, globexEntry, err := NewReadKey(rand.Reader, globex, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	opKey, opEntry, err := NewOperatorKey(rand.Reader, created)
	if err != nil {
		t.Fatal(err)
	}
	ingestKey, ingestEntry, err := NewKey(rand.Reader, acme, nil, created)
	if err != nil {
		t.Fatal(err)
	}
	for key, prefix := range map[string]string{acmeKey: ReadKeyPrefix, globexKey: ReadKeyPrefix, opKey: OperatorKeyPrefix} {
		if !strings.HasPrefix(key, prefix) || len(key) != keyLen {
			t.Errorf("key %q: want prefix %s and %d characters", key, prefix, keyLen)
		}
	}
	if strings.Contains(opEntry.YAML(), opKey[len(OperatorKeyPrefix)+keyIDLen+1:]) {
		t.Fatalf("catalogue entry %s holds the secret", opEntry.YAML())
	}
	if got, want := acmeEntry.YAML(), "- {id: "+acmeEntry.ID+", sha256: "+HashKey(acmeKey)+", created: 2026-11-25}"; got != want {
		t.Errorf("YAML() = %s, want %s", got, want)
	}
	entry := func(y string) string { return strings.TrimPrefix(y, "- ") }
	c := mustParse(t, fmt.Sprintf(base,
		", ingest_keys: ["+entry(ingestEntry.YAML())+"], read_keys: ["+entry(acmeEntry.YAML())+"]",
		", read_keys: ["+entry(globexEntry.YAML())+"]",
		"operator_keys:\n  "+opEntry.YAML()+"\n"))
	if got := c.ReadKeyring().Len(); got != 3 {
		t.Fatalf("read keyring holds %d keys, want 3", got)
	}
	if got := len(c.ReadKeys()); got != 3 || c.ReadKeys()[2].Kind() != KindOperator {
		t.Fatalf("ReadKeys() = %v, want acme's, globex's, then the operator key", c.ReadKeys())
	}
	f := func(name, key string, kind Kind, tenant string, reads map[string]bool) {
		t.Helper()
		k, err := c.ReadKeyring().Authenticate(key)
		if err != nil || k.Kind() != kind || k.Tenant() != tenant {
			t.Errorf("%s: Authenticate = %+v, %v; want a %s key of %q", name, k, err, kind, tenant)
			return
		}
		for who, want := range reads {
			if got := k.MayRead(who); got != want {
				t.Errorf("%s: MayRead(%q) = %v, want %v", name, who, got, want)
			}
		}
	}
	f("acme's read key", acmeKey, KindRead, "acme", map[string]bool{"acme": true, "globex": false, "": false, "nobody": false})
	f("globex's read key", globexKey, KindRead, "globex", map[string]bool{"acme": false, "globex": true})
	f("operator key", opKey, KindOperator, "", map[string]bool{"acme": true, "globex": true, "nobody": true})

	// The kinds never cross: an ingest key does not read, a read or operator key does not ingest.
	if k, err := c.ReadKeyring().Authenticate(ingestKey); !errors.Is(err, ErrKeyKind) || k != nil {
		t.Errorf("read keyring: Authenticate(ingest key) = %v, %v; want ErrKeyKind", k, err)
	}
	if k, err := c.Keyring().Authenticate(ingestKey); err != nil || k.Tenant() != "acme" {
		t.Errorf("ingest keyring: Authenticate(ingest key) = %v, %v", k, err)
	}
	for _, key := range []string{acmeKey, opKey} {
		if k, err := c.Keyring().Authenticate(key); !errors.Is(err, ErrKeyKind) || k != nil {
			t.Errorf("ingest keyring: Authenticate(%.4s… key) = %v, %v; want ErrKeyKind", key, k, err)
		}
	}
	for key, want := range map[string]Kind{ingestKey: KindIngest, acmeKey: KindRead, opKey: KindOperator} {
		if got, err := KindOf(key); got != want || err != nil {
			t.Errorf("KindOf(%.4s…) = %v, %v; want %v", key, got, err, want)
		}
	}
}

// A key's line under the wrong field authenticates nothing: a tenant's read key listed as an
// operator key does not become one, nor an operator key listed under a tenant's read keys, nor
// an ingest key's line under read_keys (its hash covers the mmk_ prefix).
func TestMisplacedKeyLinesGrantNothing(t *testing.T) {
	const tenants = "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a]%s}\n%s"
	acme, _ := mustParse(t, fmt.Sprintf(tenants, "", "")).Tenant("acme")
	readKey, readEntry, _ := NewReadKey(rand.Reader, acme, time.Time{})
	opKey, opEntry, _ := NewOperatorKey(rand.Reader, time.Time{})
	ingestKey, ingestEntry, _ := NewKey(rand.Reader, acme, nil, time.Time{})
	f := func(name, readKeys, operatorKeys, key string, want error) {
		t.Helper()
		c := mustParse(t, fmt.Sprintf(tenants, readKeys, operatorKeys))
		if k, err := c.ReadKeyring().Authenticate(key); k != nil || !errors.Is(err, want) {
			t.Errorf("%s: Authenticate = %+v, %v; want %v", name, k, err, want)
		}
		if k, err := c.Keyring().Authenticate(key); k != nil || err == nil {
			t.Errorf("%s: ingest Authenticate = %+v, %v; want an error", name, k, err)
		}
	}
	f("read key listed as an operator key", "", "operator_keys: ["+strings.TrimPrefix(readEntry.YAML(), "- ")+"]\n", readKey, ErrKeyUnknown)
	f("operator key listed as acme's read key", ", read_keys: ["+strings.TrimPrefix(opEntry.YAML(), "- ")+"]", "", opKey, ErrKeyUnknown)
	f("ingest key's line under read_keys", ", read_keys: ["+strings.TrimPrefix(ingestEntry.YAML(), "- ")+"]", "", ingestKey, ErrKeyKind)
}

func TestReadAuthenticateRefuses(t *testing.T) {
	c := mustParse(t, "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a]}\n")
	acme, _ := c.Tenant("acme")
	key, k, err := NewReadKey(rand.Reader, acme, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ring, err := NewReadKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.Authenticate(key); err != nil {
		t.Fatalf("Authenticate(key) = %v", err)
	}
	other, _, _ := NewReadKey(rand.Reader, acme, time.Time{})
	flipped := key[:len(key)-1] + map[bool]string{true: "A", false: "B"}[key[len(key)-1] != 'A']
	f := func(name string, ring *ReadKeyring, key string, want error) {
		t.Helper()
		if got, err := ring.Authenticate(key); !errors.Is(err, want) || got != nil {
			t.Errorf("%s: Authenticate(%q) = %v, %v; want %v", name, key, got, err, want)
		}
	}
	f("empty", ring, "", ErrKeyMalformed)
	f("no prefix", ring, strings.TrimPrefix(key, ReadKeyPrefix), ErrKeyMalformed)
	f("unknown prefix", ring, "mmx_"+strings.TrimPrefix(key, ReadKeyPrefix), ErrKeyMalformed)
	f("truncated", ring, key[:len(key)-1], ErrKeyMalformed)
	f("the hash itself", ring, k.SHA256, ErrKeyMalformed)
	f("same id and secret as an operator key", ring, OperatorKeyPrefix+strings.TrimPrefix(key, ReadKeyPrefix), ErrKeyUnknown)
	f("unknown id", ring, other, ErrKeyUnknown)
	f("wrong secret", ring, flipped, ErrKeyMismatch)
	f("nil keyring", nil, key, ErrKeyUnknown)
	if _, err := NewReadKeyring(&ReadKey{ID: "0123456789abcdef"}); err == nil {
		t.Error("NewReadKeyring took a key that was never validated")
	}
}

func TestReadKeyCatalogueErrors(t *testing.T) {
	const h = "0000000000000000000000000000000000000000000000000000000000000000"
	f := func(acme, top, want string) {
		t.Helper()
		yaml := "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [a]" + acme + "}\n" +
			"  - {id: globex, plan: pro, purchased: 2026-01-01, apps: [g], ingest_keys: [{id: ffffffffffffffff, sha256: " + h + "}]}\n" + top
		_, err := Parse("cat.yaml", []byte(yaml))
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s %s: error %v, want ErrInvalid naming %q", acme, top, err, want)
		}
	}
	f(", read_keys: [{id: 0123456789ABCDEF, sha256: "+h+"}]", "", `cat.yaml: tenant "acme": read_keys[0].id: "0123456789ABCDEF" must be 16 lower-case hex digits`)
	f(", read_keys: [{id: 0123456789abcdef, sha256: abc}]", "", `cat.yaml: tenant "acme": read_keys[0].sha256: "abc" must be 64 lower-case hex digits`)
	f(", read_keys: [{id: 0123456789abcdef}]", "", `cat.yaml: tenant "acme": read_keys[0].sha256: required`)
	f(", read_keys: [{id: 0123456789abcdef, sha256: "+h+", apps: [a]}]", "", `cat.yaml: tenant "acme": read_keys[0].apps: unknown field`)
	f(", read_keys: [{id: 0123456789abcdef, sha256: "+h+", created: yesterday}]", "", `cat.yaml: tenant "acme": read_keys[0].created: "yesterday" is not a date`)
	f(", read_keys: [{id: 0123456789abcdef, sha256: "+h+"}, {id: 0123456789abcdef, sha256: "+h+"}]", "",
		`cat.yaml: tenant "acme": read_keys: key 0123456789abcdef listed twice (also under tenant "acme": read_keys)`)
	f(", read_keys: [{id: ffffffffffffffff, sha256: "+h+"}]", "",
		`cat.yaml: tenant "globex": ingest_keys: key ffffffffffffffff listed twice (also under tenant "acme": read_keys)`)
	f(", ingest_keys: [{id: 0123456789abcdef, sha256: "+h+"}]", "operator_keys: [{id: 0123456789abcdef, sha256: "+h+"}]\n",
		`cat.yaml: operator_keys: key 0123456789abcdef listed twice (also under tenant "acme": ingest_keys)`)
	f("", "operator_keys: [{id: 0123456789abcdef, sha256: xyz}]\n", `cat.yaml: operator_keys[0].sha256: "xyz" must be 64 lower-case hex digits`)
	f("", "operator_keys: [{id: 0123456789abcdef, sha256: "+h+", tenant: acme}]\n", `cat.yaml: operator_keys[0].tenant: unknown field`)
	f("", "operator_keys: {id: 0123456789abcdef}\n", `cat.yaml: operator_keys: a mapping is not a list`)
}
