package plan

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/maumeter/maumeter/pkg/tenant"
)

// seed is the billing overview (../shared/seed/tcmpp-billing-overview.txt), figure by figure:
// the embedded catalogue must hold exactly these.
var seed = []Plan{
	{ID: "pro", Name: "Pro", Official: true, SuperApps: 1, TestingSuperApps: 2, MiniProgramsCreated: 150, MiniProgramsReleased: 50,
		IncludedMAU: 200_000, PayAsYouGo: true, UnitPriceUSD: "0.015"},
	{ID: "enterprise", Name: "Enterprise", Official: true, SuperApps: 1, TestingSuperApps: 2, MiniProgramsCreated: 600, MiniProgramsReleased: 200,
		IncludedMAU: 1_000_000, PayAsYouGo: true, UnitPriceUSD: "0.01"},
	{ID: "poc_pro", Name: "POC Pro", Official: false, SuperApps: 0, TestingSuperApps: 2, MiniProgramsCreated: 150, MiniProgramsReleased: 150,
		IncludedMAU: 200, HardCap: true},
	{ID: "poc_enterprise", Name: "POC Enterprise", Official: false, SuperApps: 0, TestingSuperApps: 2, MiniProgramsCreated: 600, MiniProgramsReleased: 600,
		IncludedMAU: 500, HardCap: true},
}

func figures(p *Plan) string {
	return fmt.Sprintf("%s %q official=%v super_apps=%d testing=%d created=%d released=%d included=%d hard_cap=%v payg=%v price=%q=%s",
		p.ID, p.Name, p.Official, p.SuperApps, p.TestingSuperApps, p.MiniProgramsCreated, p.MiniProgramsReleased,
		p.IncludedMAU, p.HardCap, p.PayAsYouGo, p.UnitPriceUSD, p.UnitPrice.String())
}

func checkSeed(t *testing.T, c *Catalog) {
	t.Helper()
	if len(c.Plans) != len(seed) {
		t.Errorf("%s: %d plans, want %d", c.Name(), len(c.Plans), len(seed))
	}
	for i := range seed {
		want := seed[i]
		want.UnitPrice = decimalOf(t, want.UnitPriceUSD)
		got, ok := c.Plan(want.ID)
		if !ok {
			t.Errorf("%s: plan %s missing", c.Name(), want.ID)
			continue
		}
		if figures(got) != figures(&want) {
			t.Errorf("%s:\n got %s\nwant %s", c.Name(), figures(got), figures(&want))
		}
	}
	if want := (Validity{AnniversaryIncluded: true, LeapDayAnniversary: LeapDayFeb28}); c.Validity != want {
		t.Errorf("%s: validity %+v, want %+v", c.Name(), c.Validity, want)
	}
}

func TestDefaultIsTheSeed(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	checkSeed(t, c)
	if c.Name() != DefaultName {
		t.Errorf("Name = %q", c.Name())
	}
	// tenant.Parse without options accepts the plans of the embedded catalogue.
	if !slices.Equal(c.IDs(), tenant.Plans) {
		t.Errorf("plan ids %v, tenant.Plans %v", c.IDs(), tenant.Plans)
	}
	if d, err := LoadCatalog(""); d != c || err != nil {
		t.Errorf(`LoadCatalog("") = %p, %v; want the default %p`, d, err, c)
	}
}

// The catalogues shipped in the repository load, pass their schemas and agree with the plans.
func TestShippedCatalogues(t *testing.T) {
	plans, err := LoadCatalog("../../deploy/plans.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkSeed(t, plans)
	for _, path := range []string{"../../deploy/tenants.yaml", "../../cmd/maumeter/demo_tenants.yaml"} {
		tc, err := plans.LoadTenants(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if len(tc.Tenants) < 3 {
			t.Errorf("%s: %d tenants, want one per plan family at least", path, len(tc.Tenants))
		}
	}
}

func TestParseCatalogErrors(t *testing.T) {
	const prefix = "invalid plan catalogue: "
	f := func(yaml string, want ...string) {
		t.Helper()
		_, err := ParseCatalog("plans.yaml", []byte(yaml))
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
	const v = "validity: {anniversary_included: true, leap_day_anniversary: feb28}\n"
	const pro = "  - {id: pro, name: Pro, official: true, super_apps: 1, testing_super_apps: 2, mini_programs_created: 150, mini_programs_released: 50, included_mau: 200000"
	const poc = "  - {id: poc, name: POC, official: false, super_apps: 0, testing_super_apps: 2, mini_programs_created: 150, mini_programs_released: 150, included_mau: 200"
	ok := v + "plans:\n" + pro + ", hard_cap: false, pay_as_you_go: true, unit_price_usd: '0.015'}\n" + poc + ", hard_cap: true, pay_as_you_go: false}\n"
	if _, err := ParseCatalog("plans.yaml", []byte(ok)); err != nil {
		t.Fatalf("the base of the cases is refused: %v", err)
	}
	f(``, `plans.yaml: no plans (empty document)`)
	f(`plans: []`, `plans.yaml: plans: must not be empty`, `plans.yaml: validity: required`)
	f("validity: {anniversary_included: yes, leap_day_anniversary: feb29}\nplans:\n"+poc+", hard_cap: true, pay_as_you_go: false}\n",
		`plans.yaml: validity.anniversary_included: "yes" is not true or false`,
		`plans.yaml: validity.leap_day_anniversary: "feb29" is not one of "feb28", "mar1"`)
	f(v+"plans:\n"+pro+", hard_cap: false, pay_as_you_go: true, unit_price_usd: abc}\n",
		`plans.yaml: plan "pro": unit_price_usd: "abc" is not a decimal (a non-negative number in quotes, e.g. "0.015")`)
	f(v+"plans:\n"+pro+", hard_cap: false, pay_as_you_go: true, unit_price_usd: 0.015}\n",
		`plans.yaml: plan "pro": unit_price_usd: 0.015 is not a decimal (a non-negative number in quotes, e.g. "0.015")`)
	f(v+"plans:\n"+pro+", hard_cap: false, pay_as_you_go: true}\n", `plans.yaml: plan "pro": unit_price_usd: required`)
	f(v+"plans:\n"+pro+", hard_cap: true, pay_as_you_go: true, unit_price_usd: '0.015'}\n",
		`plans.yaml: plan "pro": hard_cap: true must be false on a plan with pay-as-you-go`)
	f(v+"plans:\n"+poc+", hard_cap: true, pay_as_you_go: false, unit_price_usd: '0.01'}\n",
		`plans.yaml: plan "poc": unit_price_usd: "0.01" is not allowed: the plan has no pay-as-you-go`)
	f(v+"plans:\n"+poc+", hard_cap: false, pay_as_you_go: false}\n",
		`plans.yaml: plan "poc": hard_cap: false must be true on a plan without pay-as-you-go (MAU above included_mau is either charged or capped)`)
	f(v+"plans:\n"+poc+", hard_cap: false, pay_as_you_go: true, unit_price_usd: '0.01'}\n",
		`plans.yaml: plan "poc": pay_as_you_go: true must be false: pay-as-you-go applies only to official plans`)
	f(v+"plans:\n"+pro+", hard_cap: false, pay_as_you_go: true, unit_price_usd: '0.015', colour: red}\n",
		`plans.yaml: plan "pro": colour: unknown field`)
	f(v+"plans:\n  - {name: X, official: true, super_apps: 1, testing_super_apps: 2, mini_programs_created: 1, mini_programs_released: 1, included_mau: -1, hard_cap: false, pay_as_you_go: true, unit_price_usd: '1'}\n",
		`plans.yaml: plans[0]: id: required`, `plans.yaml: plans[0]: included_mau: -1 is below the minimum, 0`)
	f(v+"plans:\n"+poc+", hard_cap: true, pay_as_you_go: false}\n"+poc+", hard_cap: true, pay_as_you_go: false}\n",
		`plans.yaml: plan "poc": id: listed twice`)
	f(v+"plans:\n"+pro, `plans.yaml: yaml: line 2: did not find expected ',' or '}'`)
}

// CheckTenants: a tenant catalogue parsed on its own against the plans in force.
func TestCheckTenants(t *testing.T) {
	plans, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	f := func(yaml string, want ...string) {
		t.Helper()
		tc, err := tenant.Parse("tenants.yaml", []byte(yaml), tenant.KnownPlans("pro", "gold", "poc_pro"))
		if err != nil {
			t.Fatal(err)
		}
		err = plans.CheckTenants(tc)
		if len(want) == 0 {
			if err != nil {
				t.Errorf("CheckTenants: %v", err)
			}
			return
		}
		if !errors.Is(err, tenant.ErrInvalid) {
			t.Errorf("error %v does not wrap tenant.ErrInvalid", err)
		}
		if got, want := fmt.Sprint(err), "invalid tenant catalogue: "+strings.Join(want, "\n"); got != want {
			t.Errorf("got error:\n%s\nwant:\n%s", got, want)
		}
	}
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], contract: {unit_price_usd: '0.01'}}\n")
	f("tenants:\n  - {id: a, plan: gold, purchased: 2026-01-01, apps: [x]}\n",
		`tenants.yaml: tenant "a": plan: "gold" is not a plan of plans.yaml (embedded) (pro, enterprise, poc_pro, poc_enterprise)`)
	f("tenants:\n  - {id: a, plan: pro, purchased: 2026-01-01, apps: [x], plan_history: [{plan: gold, purchased: 2025-01-01}]}\n",
		`tenants.yaml: tenant "a": plan_history[0].plan: "gold" is not a plan of plans.yaml (embedded) (pro, enterprise, poc_pro, poc_enterprise)`)
	f("tenants:\n  - {id: a, plan: poc_pro, purchased: 2026-01-01, testing_apps: [x], contract: {included_mau: 1000, unit_price_usd: '0.01'}}\n",
		`tenants.yaml: tenant "a": contract.unit_price_usd: the poc_pro plan has no pay-as-you-go, so no unit price`)

	// ParseTenants: the plan catalogue's ids replace tenant.Plans.
	custom := strings.Replace(string(DefaultYAML), "id: poc_enterprise", "id: poc_ultimate", 1)
	c, err := ParseCatalog("custom.yaml", []byte(custom))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ParseTenants("t.yaml", []byte("tenants:\n  - {id: a, plan: poc_ultimate, purchased: 2026-01-01, testing_apps: [x]}\n")); err != nil {
		t.Errorf("a plan of a custom catalogue: %v", err)
	}
	if _, err := c.ParseTenants("t.yaml", []byte("tenants:\n  - {id: a, plan: poc_enterprise, purchased: 2026-01-01, testing_apps: [x]}\n")); err == nil {
		t.Error("a plan the custom catalogue lacks is accepted")
	}
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/plans.yaml", []byte(custom), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadCatalog(dir + "/plans.yaml"); err != nil || !slices.Contains(c.IDs(), "poc_ultimate") {
		t.Errorf("LoadCatalog(file) = %v, %v", c, err)
	}
	if _, err := LoadCatalog(dir + "/missing.yaml"); err == nil {
		t.Error("LoadCatalog(missing file) = nil error")
	}
}
