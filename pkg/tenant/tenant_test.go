package tenant

import (
	"errors"
	"strings"
	"testing"
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

func TestParseErrorsNameTheField(t *testing.T) {
	f := func(yaml, want string) {
		t.Helper()
		_, err := Parse("cat.yaml", []byte(yaml))
		if err == nil {
			t.Fatalf("accepted:\n%s", yaml)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("error %v does not wrap ErrInvalid", err)
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "cat.yaml") {
			t.Errorf("error %q does not name the file and %q", err, want)
		}
	}
	f(`tenants: []`, "no tenants")
	f("tenants:\n  - {id: a, plan: gold, purchased: 2026-01-01, apps: [x]}", `tenant "a": plan`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, time_zone: Mars/Base, apps: [x]}", `tenant "a": time_zone`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-13-01, apps: [x]}", `tenant "a": purchased`)
	f("tenants:\n  - {id: a, plan: pro, apps: [x]}", `tenant "a": purchased`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01}", `tenant "a": apps`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], testing_apps: [x]}", `"x" listed twice`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [bad/app]}", `tenant "a": apps`)
	f("tenants:\n  - {id: 'a b', plan: pro, purchased: 2026-01-01, apps: [x]}", `id`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x]}\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [y]}", "listed twice")
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], colour: red}", "colour")
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], contract: {unit_price_usd: '-1'}}", "contract.unit_price_usd")
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], contract: {included_mau: -5}}", "contract.included_mau")
}
