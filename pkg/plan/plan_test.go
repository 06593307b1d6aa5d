package plan

import (
	"slices"
	"testing"

	"github.com/maumeter/maumeter/pkg/tenant"
)

func TestRate(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	str := func(v string) *string { return &v }
	override := &tenant.Contract{IncludedMAU: i64(250_000), UnitPriceUSD: str("0.012")}
	f := func(plan string, c *tenant.Contract, mau int64, wantAmount string, wantOverage int64, wantFlags ...string) {
		t.Helper()
		b := Rate(Builtin[plan], c, mau)
		if b.Amount.StringFixed(2) != wantAmount || b.OverageMAU != wantOverage || !slices.Equal(b.Flags, wantFlags) {
			t.Errorf("Rate(%s, %d) = amount %s overage %d flags %v, want %s %d %v",
				plan, mau, b.Amount.StringFixed(2), b.OverageMAU, b.Flags, wantAmount, wantOverage, wantFlags)
		}
	}
	f("pro", nil, 0, "0.00", 0)
	f("pro", nil, 199_999, "0.00", 0)
	f("pro", nil, 200_000, "0.00", 0)
	f("pro", nil, 200_001, "0.02", 1)        // 0.015 rounds half-up
	f("pro", nil, 212_345, "185.18", 12_345) // 185.175 rounds up
	f("pro", nil, 200_003, "0.05", 3)        // 0.045 rounds up
	f("pro", nil, 10_200_000, "150000.00", 10_000_000)
	f("enterprise", nil, 1_000_000, "0.00", 0)
	f("enterprise", nil, 1_000_001, "0.01", 1)
	f("enterprise", nil, 1_000_777, "7.77", 777)
	f("pro", override, 250_010, "0.12", 10)
	f("pro", override, 250_000, "0.00", 0)
	f("pro", override, 212_345, "0.00", 0)
	f("poc_pro", nil, 200, "0.00", 0)
	f("poc_pro", nil, 201, "0.00", 1, FlagPOCCapExceeded)
	f("poc_enterprise", nil, 500, "0.00", 0)
	f("poc_enterprise", nil, 5000, "0.00", 4500, FlagPOCCapExceeded)
}
