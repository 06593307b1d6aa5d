package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeysCommand: `maumeter keys new` prints a key once and a catalogue line, for an ingest
// key, a read key (--read) and an operator key (--operator); once the lines are in the
// catalogue, `keys list` shows the keys without their secrets and `keys check` names their kind
// and tenant; a key not in the catalogue is refused.
func TestKeysCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tenants := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(tenants, fmt.Appendf(nil, catalogue, "", "", "", ""), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"MAUMETER_TENANTS=" + tenants}
	key, entry := newKey(t, ctx, env, "t-newyork")
	scoped, scopedEntry := newKey(t, ctx, env, "t-shanghai", "--apps", "sh-qa,sh-lite", "--note", "QA build")
	if !strings.Contains(scopedEntry, "apps: [sh-qa, sh-lite]") || !strings.Contains(scopedEntry, `note: "QA build"`) {
		t.Errorf("scoped key entry %s lacks its apps or note", scopedEntry)
	}
	read, readEntry := newKey(t, ctx, env, "t-newyork", "--read", "--note", "NY finance")
	op, opEntry := newOperatorKey(t, ctx, env)
	if err := os.WriteFile(tenants, withReadKeys(t, fmt.Sprintf(catalogue, scopedEntry, entry, "", ""), map[string]string{"t-newyork": readEntry}, opEntry), 0o644); err != nil {
		t.Fatal(err)
	}
	list := runOnce(t, ctx, env, "keys", "list")
	secret := func(k string) string { return k[len("mmk_")+16+1:] } // mmk_<16 hex id>_<secret>
	for _, want := range []string{"t-newyork", "t-shanghai", "sh-qa,sh-lite", "QA build", "NY finance", "operator", read[4:20], op[4:20]} {
		if !strings.Contains(list, want) {
			t.Errorf("keys list lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, secret(key)) || strings.Contains(list, secret(scoped)) || strings.Contains(list, secret(read)) || strings.Contains(list, secret(op)) {
		t.Errorf("keys list shows a secret:\n%s", list)
	}
	if out := runOnce(t, ctx, env, "keys", "check", "--key", key); !strings.Contains(out, "tenant t-newyork, ingest key") {
		t.Errorf("keys check: %s", out)
	}
	if out := runOnce(t, ctx, env, "keys", "check", "--key", read); !strings.Contains(out, "tenant t-newyork, read key") {
		t.Errorf("keys check of the read key: %s", out)
	}
	if out := runOnce(t, ctx, env, "keys", "check", "--key", op); !strings.Contains(out, "operator key") {
		t.Errorf("keys check of the operator key: %s", out)
	}
	cmd := exec.CommandContext(ctx, binary, "keys", "check")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(scoped + "\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "tenant t-shanghai") || !strings.Contains(string(out), "sh-qa, sh-lite") {
		t.Errorf("keys check < key: %v %s", err, out)
	}
	// A key of the tenant that is not in the catalogue, and a tenant that is not there at all.
	stray, _ := newKey(t, ctx, env, "t-auckland")
	cmd = exec.CommandContext(ctx, binary, "keys", "check", "--key", stray)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not a key of") {
		t.Errorf("keys check of a key not in the catalogue: %v %s", err, out)
	}
	cmd = exec.CommandContext(ctx, binary, "keys", "new", "--tenant", "t-nobody")
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not in") {
		t.Errorf("keys new for an unknown tenant: %v %s", err, out)
	}
}
