package plan

import "testing"

// TestHardCap: the cap of a tenant-month is that of the purchase pricing it, after its contract.
func TestHardCap(t *testing.T) {
	c := theDefault(t)
	f := func(entry, m string, wantCap int64, wantOK, wantMay bool) {
		t.Helper()
		tn := tenantOf(t, c, entry)
		got, ok := c.HardCap(tn, month(t, m))
		if got != wantCap || ok != wantOK {
			t.Errorf("HardCap({%s}, %s) = %d, %v; want %d, %v", entry, m, got, ok, wantCap, wantOK)
		}
		if may := c.MayCap(tn); may != wantMay {
			t.Errorf("MayCap({%s}) = %v, want %v", entry, may, wantMay)
		}
	}
	const poc = `id: t, plan: poc_pro, purchased: 2026-09-01, testing_apps: [qa]`
	f(poc, "2026-11", 200, true, true)
	f(poc, "2026-09", 200, true, true) // the purchase is in force on September's last day
	f(poc, "2026-08", 0, false, true)  // no purchase in force: nothing caps the month
	f(poc, "2027-09", 0, false, true)  // expired on 2027-09-01
	f(`id: t, plan: poc_enterprise, purchased: 2026-09-01, testing_apps: [qa]`, "2026-11", 500, true, true)
	f(`id: t, plan: poc_pro, purchased: 2026-09-01, testing_apps: [qa], contract: {included_mau: 300}`, "2026-11", 300, true, true)
	f(`id: t, plan: pro, purchased: 2026-09-01, apps: [a]`, "2026-11", 0, false, false)
	f(`id: t, plan: enterprise, purchased: 2026-09-01, apps: [a], contract: {included_mau: 5}`, "2026-11", 0, false, false)
	// A POC tenant that bought Pro on November 20: Pro prices November and later, so they are
	// not capped; October still is.
	const upgraded = `id: t, plan: pro, purchased: 2026-11-20, apps: [a], testing_apps: [qa],
    plan_history: [{plan: poc_pro, purchased: 2026-09-01}]`
	f(upgraded, "2026-10", 200, true, true)
	f(upgraded, "2026-11", 0, false, true)
	f(upgraded, "2026-12", 0, false, true)
}
