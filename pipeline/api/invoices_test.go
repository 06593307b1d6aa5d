package api

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/shopspring/decimal"
	"gopkg.in/yaml.v3"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pipeline/rate"
	"github.com/maumeter/maumeter/schemas"
)

// TestOpenAPIDocumentsStatements checks that schemas/openapi.yaml describes every field of a
// full invoices answer (a posted bill with a posted, a stale and a pending adjustment) and
// nothing it never sends: the Statement, its evidence, its Bill and their Adjustments.
func TestOpenAPIDocumentsStatements(t *testing.T) {
	type schema struct {
		Properties map[string]struct {
			Properties map[string]any `yaml:"properties"`
		} `yaml:"properties"`
	}
	var doc struct {
		Components struct {
			Schemas map[string]schema `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(schemas.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	d := decimal.RequireFromString
	at := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	invs := []*chstore.Invoice{
		{TenantID: "acme", Month: "2026-09", InvoiceID: "a9", RollupVersion: 1, AmountUSD: d("1"), BillingSeq: 1, ChargeUSD: d("1")},
		{TenantID: "acme", Month: "2026-09", InvoiceID: "a9v2", RollupVersion: 2, AmountUSD: d("2"), BillingSeq: 2, ChargeUSD: d("1"),
			BilledBeforeUSD: d("1"), PreviousInvoiceID: "a9", PreviousRollupVersion: 1},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "a10v2", RollupVersion: 2, AmountUSD: d("3"), BillingSeq: 1, ChargeUSD: d("3")},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "a10", RollupVersion: 1, AmountUSD: d("2"), BillingSeq: 2, BilledBeforeUSD: d("3"),
			PreviousInvoiceID: "a10v2", PreviousRollupVersion: 2, SupersededByVersion: 2, Flags: []string{rate.FlagStaleVersion}},
		{TenantID: "acme", Month: "2026-10", InvoiceID: "a10v3", RollupVersion: 3, AmountUSD: d("4"), BillingSeq: 3, BilledBeforeUSD: d("3"),
			ChargeUSD: d("1"), PreviousInvoiceID: "a10v2", PreviousRollupVersion: 2},
	}
	runs := []*chstore.BillingRun{{TenantID: "acme", RunSeq: 1, BillMonth: "2026-10", PostedAt: at, PostedBy: rate.PostedBy,
		PostedThrough: map[string]uint32{"2026-09": 2, "2026-10": 2}}}
	sts := rate.Statements(invs, runs)
	data, err := json.Marshal(InvoicesResponse{TenantID: "acme", Statements: sts})
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Statements []map[string]json.RawMessage `json:"statements"`
	}
	if err := json.Unmarshal(data, &resp); err != nil || len(resp.Statements) != 2 {
		t.Fatalf("answer %s (%v): want 2 statements", data, err)
	}
	oct := resp.Statements[1]
	var evidence, bill map[string]json.RawMessage
	var adjustments []map[string]json.RawMessage
	if err := json.Unmarshal(oct["evidence"], &evidence); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(oct["bill"], &bill); err != nil {
		t.Fatal(err)
	}
	for _, list := range []json.RawMessage{oct["adjustments"], bill["adjustments"]} {
		var adj []map[string]json.RawMessage
		if err := json.Unmarshal(list, &adj); err != nil {
			t.Fatal(err)
		}
		adjustments = append(adjustments, adj...)
	}
	// October's own: v1 stale, v3 pending; on its bill, September's v1 and v2 (September had
	// no bill of its own).
	if len(adjustments) != 4 || string(adjustments[0]["status"]) != `"stale"` || string(adjustments[1]["status"]) != `"pending"` ||
		string(adjustments[2]["status"]) != `"posted"` || string(adjustments[3]["status"]) != `"posted"` || string(bill["status"]) != `"posted"` {
		t.Fatalf("October = %s", data)
	}
	sent := map[string]bool{}
	for _, a := range adjustments {
		for k := range a {
			sent[k] = true
		}
	}
	f := func(name string, documented map[string]bool, sent map[string]bool) {
		t.Helper()
		for k := range sent {
			if !documented[k] {
				t.Errorf("the invoices read sends %s, which schemas/openapi.yaml %s does not document", k, name)
			}
		}
		for k := range documented {
			if !sent[k] {
				t.Errorf("schemas/openapi.yaml %s documents %s, which the invoices read never sends", name, k)
			}
		}
	}
	keys := func(m map[string]json.RawMessage) map[string]bool {
		out := map[string]bool{}
		for k := range m {
			out[k] = true
		}
		return out
	}
	props := func(s schema) map[string]bool {
		out := map[string]bool{}
		for k := range s.Properties {
			out[k] = true
		}
		return out
	}
	st := doc.Components.Schemas["Statement"]
	ev := map[string]bool{}
	for k := range st.Properties["evidence"].Properties {
		ev[k] = true
	}
	f("Statement", props(st), keys(oct))
	f("Statement.evidence", ev, keys(evidence))
	f("Bill", props(doc.Components.Schemas["Bill"]), keys(bill))
	f("Adjustment", props(doc.Components.Schemas["Adjustment"]), sent)
}
