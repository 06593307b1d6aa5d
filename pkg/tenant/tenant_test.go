package tenant

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const good = `
tenants:
  - id: acme
    plan: pro
    purchased: 2026-03-15
    time_zone: Asia/Shanghai
    apps: [acme-super]
    testing_apps: [acme-qa]
    contract:
      included_mau: 250000
      unit_price_usd: "0.012"
  - id: globex
    plan: enterprise
    purchased: 2026-01-01
    apps: [globex-app]
`

func TestParseGood(t *testing.T) {
	c, err := Parse("tenants.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	acme, ok := c.Tenant("acme")
	if !ok {
		t.Fatal("acme missing")
	}
	if got := acme.Location().String(); got != "Asia/Shanghai" {
		t.Errorf("zone = %s", got)
	}
	if known, testing := acme.App("acme-qa"); !known || !testing {
		t.Errorf("acme-qa: known=%v testing=%v, want true true", known, testing)
	}
	if known, testing := acme.App("acme-super"); !known || testing {
		t.Errorf("acme-super: known=%v testing=%v, want true false", known, testing)
	}
	if known, _ := acme.App("globex-app"); known {
		t.Error("acme owns globex-app")
	}
	globex, _ := c.Tenant("globex")
	if got := globex.Location().String(); got != "UTC" {
		t.Errorf("default zone = %s, want UTC", got)
	}
	if got := globex.PurchasedOn().Format("2006-01-02"); got != "2026-01-01" {
		t.Errorf("purchased = %s", got)
	}
}

// TestParseErrors shows whole messages: the file, the tenant (by id when it has a usable one,
// else by index) and the field, from the schema and from the Go checks alike.
func TestParseErrors(t *testing.T) {
	const prefix = "invalid tenant catalogue: "
	f := func(yaml string, want ...string) {
		t.Helper()
		_, err := Parse("tenants.yaml", []byte(yaml))
		if err == nil {
			t.Errorf("accepted:\n%s", yaml)
			return
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("error %v does not wrap ErrInvalid", err)
		}
		if got, want := err.Error(), prefix+strings.Join(want, "\n"); got != want {
			t.Errorf("catalogue:\n%s\ngot error:\n%s\nwant:\n%s", yaml, got, want)
		}
	}
	const a = "tenants:\n  - {id: acme, plan: pro, purchased: 2026-01-01, apps: [x]"
	f(``, `tenants.yaml: no tenants (empty document)`)
	f(`tenants: []`, `tenants.yaml: tenants: must not be empty`)
	f(`{}`, `tenants.yaml: tenants: required`)
	f(`tenant: []`, `tenants.yaml: tenant: unknown field`, `tenants.yaml: tenants: required`)
	f("tenants:\n  - {id: a, plan: pro", `tenants.yaml: yaml: line 1: did not find expected ',' or '}'`)
	f("tenants:\n  - {id: a, id: b}", `tenants.yaml: line 2: key "id" listed twice`)
	f("tenants:\n  - 42", `tenants.yaml: tenants[0]: 42 is not an object`)
	// The schema.
	f(a+`, contract: {unit_price_usd: abc}}`, `tenants.yaml: tenant "acme": contract.unit_price_usd: "abc" is not a decimal (a non-negative number in quotes, e.g. "0.012")`)
	f(a+`, contract: {unit_price_usd: 0.012}}`, `tenants.yaml: tenant "acme": contract.unit_price_usd: 0.012 is not a decimal (a non-negative number in quotes, e.g. "0.012")`)
	f(a+`, contract: {unit_price_usd: '-1'}}`, `tenants.yaml: tenant "acme": contract.unit_price_usd: "-1" is not a decimal (a non-negative number in quotes, e.g. "0.012")`)
	f(a+`, contract: {included_mau: -5}}`, `tenants.yaml: tenant "acme": contract.included_mau: -5 is below the minimum, 0`)
	f(a+`, contract: {included_mau: 123456789012345678901234567890}}`, `tenants.yaml: tenant "acme": contract.included_mau: 123456789012345678901234567890 is above the maximum, 9223372036854775807`)
	f(a+`, contract: {included_mau: lots}}`, `tenants.yaml: tenant "acme": contract.included_mau: "lots" is not an integer`)
	f(a+`, contract: {}}`, `tenants.yaml: tenant "acme": contract: must not be empty`)
	f(a+`, contract: {discount: 5}}`, `tenants.yaml: tenant "acme": contract.discount: unknown field`)
	f(a+`, colour: red}`, `tenants.yaml: tenant "acme": colour: unknown field`)
	f("tenants:\n  - {id: a, plan: pro, apps: [x]}", `tenants.yaml: tenant "a": purchased: required`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-13-01, apps: [x]}", `tenants.yaml: tenant "a": purchased: "2026-13-01" is not a date (YYYY-MM-DD)`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-02-30, apps: [x]}", `tenants.yaml: tenant "a": purchased: "2026-02-30" is not a date (YYYY-MM-DD)`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 15/03/2026, apps: [x]}", `tenants.yaml: tenant "a": purchased: "15/03/2026" is not a date (YYYY-MM-DD)`)
	f("tenants:\n  - {id: 'a b', plan: pro, purchased: 2026-01-01, apps: [x]}", `tenants.yaml: tenants[0]: id: "a b" must be 1-64 of [A-Za-z0-9._-]`)
	f("tenants:\n  - {plan: pro, purchased: 2026-01-01, apps: [x]}", `tenants.yaml: tenants[0]: id: required`)
	f("tenants:\n  - {id: 42, plan: pro, purchased: 2026-01-01, apps: x}", `tenants.yaml: tenant "42": apps: "x" is not a list`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [bad/app]}", `tenants.yaml: tenant "a": apps[0]: "bad/app" must be 1-64 of [A-Za-z0-9._-]`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x, x]}", `tenants.yaml: tenant "a": apps: "x" listed twice`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: x}", `tenants.yaml: tenant "a": apps: "x" is not a list`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], bill_testing_apps: maybe}", `tenants.yaml: tenant "a": bill_testing_apps: "maybe" is not true or false`)
	f(a+`, plan_history: [{plan: enterprise}]}`, `tenants.yaml: tenant "acme": plan_history[0].purchased: required`)
	f(a+`, plan_history: [{plan: enterprise, purchased: 2025-01-01, contract: {unit_price_usd: x}}]}`, `tenants.yaml: tenant "acme": plan_history[0].contract.unit_price_usd: "x" is not a decimal (a non-negative number in quotes, e.g. "0.012")`)
	f(a+`, ingest_limit: {events_per_second: -1}}`, `tenants.yaml: tenant "acme": ingest_limit.events_per_second: -1 is below the minimum, 0`)
	f(a+`, ingest_limit: {max_inflight: -1}}`, `tenants.yaml: tenant "acme": ingest_limit.max_inflight: -1 is below the minimum, 0`)
	f(a+`, ingest_limit: {max_inflight: 8, slots: 2}}`, `tenants.yaml: tenant "acme": ingest_limit.slots: unknown field`)
	// Several at once, each with its tenant.
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], colour: red}\n  - {id: b, plan: pro, purchased: yesterday, apps: [y]}",
		`tenants.yaml: tenant "a": colour: unknown field`, `tenants.yaml: tenant "b": purchased: "yesterday" is not a date (YYYY-MM-DD)`)
	// What the schema cannot say: Go.
	f("tenants:\n  - {id: a, plan: gold, purchased: 2026-01-01, apps: [x]}", `tenants.yaml: tenant "a": plan: "gold" is not one of pro, enterprise, poc_pro, poc_enterprise`)
	f(a+`, plan_history: [{plan: gold, purchased: 2025-01-01}]}`, `tenants.yaml: tenant "acme": plan_history[0].plan: "gold" is not one of pro, enterprise, poc_pro, poc_enterprise`)
	f(a+`, plan_history: [{plan: enterprise, purchased: 2026-01-01}]}`, `tenants.yaml: tenant "acme": plan_history[0].purchased: 2026-01-01 is also the day of the tenant's plan: one purchase a day`)
	f(a+`, plan_history: [{plan: enterprise, purchased: 2025-01-01}, {plan: pro, purchased: 2025-01-01}]}`, `tenants.yaml: tenant "acme": plan_history[1].purchased: 2025-01-01 is also the day of plan_history[0]: one purchase a day`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, time_zone: Mars/Base, apps: [x]}", `tenants.yaml: tenant "a": time_zone: "Mars/Base" is not an IANA time zone`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01}", `tenants.yaml: tenant "a": apps: a tenant needs at least one production or testing app`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], testing_apps: [x]}", `tenants.yaml: tenant "a": testing_apps: "x" listed twice`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x]}\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [y]}", `tenants.yaml: tenant "a": id: listed twice`)
}

// Options: the plans a catalogue may name come from the plan catalogue in force.
func TestKnownPlans(t *testing.T) {
	yaml := []byte("tenants:\n  - {id: a, plan: gold, purchased: 2026-01-01, apps: [x], plan_history: [{plan: pro, purchased: 2025-01-01}]}\n")
	if _, err := Parse("t.yaml", yaml); err == nil {
		t.Error("gold accepted by default")
	}
	if _, err := Parse("t.yaml", yaml, KnownPlans("gold", "pro")); err != nil {
		t.Errorf("KnownPlans(gold, pro): %v", err)
	}
	if _, err := Parse("t.yaml", yaml, KnownPlans("gold")); err == nil || !strings.Contains(err.Error(), `plan_history[0].plan: "pro" is not one of gold`) {
		t.Errorf("KnownPlans(gold): error %v, want plan_history[0].plan refused", err)
	}
}

// Purchases: the tenant's own and its history, by day, each with its own contract; YAML
// numbers where the catalogue means text are read as written.
func TestPurchases(t *testing.T) {
	c := mustParse(t, `
tenants:
  - id: 42
    plan: enterprise
    purchased: 2026-03-15
    contract: {unit_price_usd: "0.009"}
    apps: [10001]
    plan_history:
      - {plan: pro, purchased: 2027-03-15}
      - {plan: pro, purchased: 2025-03-15, contract: {included_mau: 250000, unit_price_usd: "0.012"}}
`)
	tn, ok := c.Tenant("42")
	if !ok {
		t.Fatal("tenant 42 missing")
	}
	if known, _ := tn.App("10001"); !known {
		t.Error("app 10001 missing")
	}
	var got []string
	for _, p := range tn.Purchases() {
		y, m, d := p.Date()
		s := fmt.Sprintf("%s %04d-%02d-%02d %s", p.Plan, y, m, d, p.Field("plan"))
		if price, set := p.Contract.UnitPrice(); set {
			s += " at " + price.String()
		}
		got = append(got, s)
	}
	want := []string{"pro 2025-03-15 plan_history[1].plan at 0.012", "enterprise 2026-03-15 plan at 0.009", "pro 2027-03-15 plan_history[0].plan"}
	if !slices.Equal(got, want) {
		t.Errorf("purchases:\n got %q\nwant %q", got, want)
	}
	if got := tn.PurchasedOn().Format(time.DateOnly); got != "2026-03-15" {
		t.Errorf("PurchasedOn = %s", got)
	}
	if c.Name() != "t.yaml" {
		t.Errorf("Name = %q", c.Name())
	}
}
