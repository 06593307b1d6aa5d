// Package servicetest finds the real Kafka and ClickHouse that `make test` starts
// (scripts/with-services.sh exports their addresses). Tests only.
package servicetest

import (
	"os"
	"strings"
	"testing"
)

// The environment variables that name the services.
const (
	ClickHouse = "MAUMETER_CLICKHOUSE_ADDR"
	Kafka      = "MAUMETER_KAFKA_BROKERS"
)

// Require returns the values of vars (ClickHouse, Kafka) in order. When one is empty it fails
// the test under MAUMETER_REQUIRE_SERVICES=1 (as `make test` runs) and skips it otherwise.
func Require(t testing.TB, vars ...string) []string {
	t.Helper()
	vals := make([]string, len(vars))
	var missing []string
	for i, v := range vars {
		if vals[i] = os.Getenv(v); vals[i] == "" {
			missing = append(missing, v)
		}
	}
	if len(missing) == 0 {
		return vals
	}
	if os.Getenv("MAUMETER_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s required (run `make test`)", strings.Join(missing, " and "))
	}
	t.Skipf("needs %s: run `make test`", strings.Join(missing, " and "))
	return nil
}
