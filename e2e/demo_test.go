package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `maumeter demo` (`make demo`, the first of the README's two commands) small, on the real
// ClickHouse: it must end with every tenant-month equal to its generator's truth and print the
// invoices of the months it closed, each reproduced by its own SQL.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := fmt.Sprintf("e2e_demo_%d", time.Now().UnixNano())
	out := runOnce(t, ctx, []string{"MAUMETER_CLICKHOUSE_ADDR=" + clickhouseA, "MAUMETER_CLICKHOUSE_DATABASE=" + db},
		"demo", "--scale", "0.05", "--tenants", "tenants.yaml")
	for _, want := range []string{
		"every tenant-month equals the truth the generator kept",
		"the rater invoiced them",
		"each invoice's mau_sql, run on mau_devices, returns its MAU",
		"month to date",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// One invoice line per demo tenant for last month: 3, or 2 in the first hours of a month
	// (UTC), while it has not ended yet in New York.
	if n := strings.Count(out, " inv_"); n != 3 && (n != 2 || clockNow().UTC().Day() != 1) {
		t.Errorf("demo printed %d invoices, want 3:\n%s", n, out)
	}
}
