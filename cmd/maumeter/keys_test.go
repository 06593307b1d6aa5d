package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const keysCatalogue = `tenants:
  - id: acme
    plan: pro
    purchased: 2026-01-01
    apps: [acme-super, acme-lite]
    ingest_keys: [%s]
    read_keys: [%s]
  - id: globex
    plan: pro
    purchased: 2026-01-01
    apps: [globex-app]
    read_keys: [%s]
operator_keys: [%s]
`

// keysCmd runs `maumeter keys args... --tenants file` and returns stdout, stderr and the error.
func keysCmd(t *testing.T, file string, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	now := func() time.Time { return time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC) } // the keys' created date
	err := runKeys(context.Background(), now, append(args, "--tenants", file), &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// newKeyLine runs `keys new` and returns the key and the flow mapping of the catalogue line.
func newKeyLine(t *testing.T, file string, wantPrefix, wantWhere string, args ...string) (key, entry string) {
	t.Helper()
	out, errOut, err := keysCmd(t, file, append([]string{"new"}, args...)...)
	if err != nil {
		t.Fatalf("keys new %v: %v\n%s", args, err, errOut)
	}
	var lines []string
	for l := range strings.SplitSeq(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], wantPrefix) || !strings.HasPrefix(lines[1], "- {id: ") {
		t.Fatalf("keys new %v printed %q, want a %s… key and a catalogue line", args, out, wantPrefix)
	}
	if !strings.Contains(out, wantWhere) {
		t.Errorf("keys new %v: %q does not say to add it under %s", args, out, wantWhere)
	}
	if strings.Contains(lines[1], lines[0][len(wantPrefix)+17:]) {
		t.Errorf("keys new %v: the catalogue line %s holds the secret", args, lines[1])
	}
	return lines[0], strings.TrimPrefix(lines[1], "- ")
}

// TestKeysNewListCheck makes a key of each kind with the command, writes the lines where it
// says, and checks what `keys list` and `keys check` say of each.
func TestKeysNewListCheck(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tenants.yaml")
	write := func(entries ...any) {
		t.Helper()
		if err := os.WriteFile(file, fmt.Appendf(nil, keysCatalogue, entries...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("", "", "", "")
	ingest, ingestY := newKeyLine(t, file, "mmk_", "tenant acme's ingest_keys", "--tenant", "acme", "--apps", "acme-lite")
	read, readY := newKeyLine(t, file, "mmr_", "tenant acme's read_keys", "--read", "--tenant", "acme", "--note", "acme finance")
	globex, globexY := newKeyLine(t, file, "mmr_", "tenant globex's read_keys", "--read", "--tenant", "globex")
	op, opY := newKeyLine(t, file, "mmo_", "operator_keys (top level)", "--operator", "--note", "billing run")
	if !strings.Contains(readY, `note: "acme finance"`) || strings.Contains(readY, "apps") {
		t.Errorf("read key line %s: want its note and no apps", readY)
	}
	write(ingestY, readY, globexY, opY)

	list, _, err := keysCmd(t, file, "list")
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(list), "\n")
	if len(rows) != 5 {
		t.Fatalf("keys list: %d lines, want a header and 4 keys:\n%s", len(rows), list)
	}
	for i, want := range [][]string{
		{"KIND", "TENANT", "KEY ID"},
		{"ingest", "acme", id(ingest), "acme-lite"},
		{"read", "acme", id(read), "acme finance"},
		{"read", "globex", id(globex)},
		{"operator", "*", id(op), "billing run"},
	} {
		if fields := strings.Fields(rows[i]); !hasAll(fields, want) {
			t.Errorf("keys list line %d %q, want %q", i, rows[i], want)
		}
	}
	for _, k := range []string{ingest, read, globex, op} {
		if strings.Contains(list, k[len("mmk_")+17:]) {
			t.Errorf("keys list shows a secret:\n%s", list)
		}
	}

	check := func(key, want string) {
		t.Helper()
		out, errOut, err := keysCmd(t, file, "check", "--key", key)
		if want == "" {
			var ec exitCode
			if !errors.As(err, &ec) || ec.code != 1 || !strings.Contains(ec.msg, "not a key of") {
				t.Errorf("keys check %.4s…: %q %q %v, want exit 1 'not a key of'", key, out, errOut, err)
			}
			return
		}
		if err != nil || strings.TrimSpace(out) != want {
			t.Errorf("keys check %.4s…: %q %v, want %q", key, out, err, want)
		}
	}
	check(ingest, "tenant acme, ingest key "+id(ingest)+", apps: acme-lite")
	check(read, "tenant acme, read key "+id(read)+": reads the tenant's MAU and invoices")
	check(globex, "tenant globex, read key "+id(globex)+": reads the tenant's MAU and invoices")
	check(op, "operator key "+id(op)+": reads the MAU and invoices of every tenant")
	flipped := read[:len(read)-1] + map[bool]string{true: "A", false: "B"}[read[len(read)-1] != 'A']
	check(flipped, "")
	check("mmo_"+strings.TrimPrefix(read, "mmr_"), "") // a read key does not pass as an operator key
	check("mmk_"+strings.TrimPrefix(read, "mmr_"), "") // nor as an ingest key
	check("let-me-in", "")
	// A line under the wrong field: acme's read key listed as an operator key is no key at all.
	write(ingestY, "", globexY, readY)
	check(read, "")
}

func TestKeysNewUsage(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, keysCatalogue, "", "", "", ""), 0o644); err != nil {
		t.Fatal(err)
	}
	f := func(want string, args ...string) {
		t.Helper()
		out, _, err := keysCmd(t, file, append([]string{"new"}, args...)...)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), want) || out != "" {
			t.Errorf("keys new %v: %q %v, want a usage error naming %q and no key", args, out, err, want)
		}
	}
	f("--tenant is required")
	f("--tenant is required", "--read")
	f("drop --tenant", "--operator", "--tenant", "acme")
	f("--apps restricts ingest keys", "--read", "--tenant", "acme", "--apps", "acme-lite")
	f("--apps restricts ingest keys", "--operator", "--apps", "acme-lite")
	f(`tenant "nobody" is not in`, "--read", "--tenant", "nobody")
	f(`"globex-app" is not an app of the tenant`, "--tenant", "acme", "--apps", "globex-app")
}

func id(key string) string { return key[4:20] }

// hasAll reports whether fields hold each of want, in order (a want may span fields).
func hasAll(fields, want []string) bool {
	line := strings.Join(fields, " ")
	for _, w := range want {
		i := strings.Index(line, w)
		if i < 0 {
			return false
		}
		line = line[i+len(w):]
	}
	return true
}
