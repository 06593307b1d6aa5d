package caps

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/maumeter/maumeter/internal/promtest"
	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/plan"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// testCatalogue: initech on poc_pro (cap 200), tiny on poc_enterprise with a contract cap of 3,
// acme on pro (no cap), grown on poc_pro until it bought pro on 2026-11-20 (which prices
// November on).
const testCatalogue = `
tenants:
  - {id: initech, plan: poc_pro, purchased: 2026-09-01, time_zone: Europe/Berlin, testing_apps: [initech-poc, initech-poc-ios]}
  - {id: tiny, plan: poc_enterprise, purchased: 2026-09-01, testing_apps: [tiny-poc], contract: {included_mau: 3}}
  - {id: acme, plan: pro, purchased: 2026-03-15, time_zone: Asia/Shanghai, apps: [acme-super]}
  - {id: grown, plan: pro, purchased: 2026-11-20, apps: [grown-super], testing_apps: [grown-poc],
     plan_history: [{plan: poc_pro, purchased: 2026-09-01}]}
`

// clock is a clock the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var testNow = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// testCatalogs are testCatalogue checked against the embedded plan catalogue.
func testCatalogs(t testing.TB) (*tenant.Catalog, *plan.Catalog) {
	t.Helper()
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := plans.ParseTenants("t.yaml", []byte(testCatalogue))
	if err != nil {
		t.Fatal(err)
	}
	return cat, plans
}

func newTestState(t testing.TB) (*State, *clock, *prometheus.Registry) {
	t.Helper()
	cat, plans := testCatalogs(t)
	clk := &clock{t: testNow}
	reg := prometheus.NewRegistry()
	s, err := NewState(StateConfig{Kafka: bus.Plain([]string{"127.0.0.1:1"})}, cat, plans, clk.now, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk, reg
}

func devices(tenantID, app string, guids ...string) []string {
	out := make([]string, len(guids))
	for i, g := range guids {
		out[i] = event.KeyOf(tenantID, app, g).String()
	}
	return out
}

func guids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

func mustApply(t testing.TB, s *State, msg Message) {
	t.Helper()
	if err := s.apply(&msg); err != nil {
		t.Fatal(err)
	}
}

func evt(tenantID, app, guid string) *event.Event {
	return &event.Event{TenantID: tenantID, AppID: app, GUID: guid, Type: event.Open, MiniProgramID: "mp", TS: testNow}
}

// TestCappedTable: what a gateway answers from the published state alone, before it reserved
// anything for the asking device.
func TestCappedTable(t *testing.T) {
	full := guids("counted", 200)
	cases := []struct {
		name   string
		state  []Message
		tenant string
		app    string
		guid   string
		month  string
		want   bool
	}{
		{"no state: uncapped", nil, "initech", "initech-poc", "new", "2026-11", false},
		{"below the cap: new device", []Message{{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 199, DeviceKeys: devices("initech", "initech-poc", full[:199]...)}},
			"initech", "initech-poc", "new", "2026-11", false},
		{"capped: counted device accepted", []Message{{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices("initech", "initech-poc", full...)}},
			"initech", "initech-poc", full[137], "2026-11", false},
		{"capped: new device rejected", []Message{{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices("initech", "initech-poc", full...)}},
			"initech", "initech-poc", "new", "2026-11", true},
		{"capped: same guid in another app is another device", []Message{{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices("initech", "initech-poc", full...)}},
			"initech", "initech-poc-ios", full[0], "2026-11", true},
		{"capped: other month", []Message{{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices("initech", "initech-poc", full...)}},
			"initech", "initech-poc", "new", "2026-10", false},
		{"capped: other tenant on a POC plan", []Message{{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices("initech", "initech-poc", full...)}},
			"tiny", "tiny-poc", "new", "2026-11", false},
		{"over the cap (overshoot): counted device accepted", []Message{{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 203, Capped: true, DeviceKeys: devices("initech", "initech-poc", append(full, "x", "y", "z")...)}},
			"initech", "initech-poc", "z", "2026-11", false},
		{"contract cap of 3 reached", []Message{{TenantID: "tiny", Month: "2026-11", Cap: 3, Devices: 3, Capped: true, DeviceKeys: devices("tiny", "tiny-poc", "a", "b", "c")}},
			"tiny", "tiny-poc", "d", "2026-11", true},
		{"the gateway's catalogue decides the cap, not the message", []Message{{TenantID: "initech", Month: "2026-11", Cap: 100, Devices: 150, Capped: true, DeviceKeys: devices("initech", "initech-poc", full[:150]...)}},
			"initech", "initech-poc", "new", "2026-11", false},
		{"pay-as-you-go tenant: never capped", []Message{{TenantID: "acme", Month: "2026-11", Cap: 1, Devices: 5, Capped: true}},
			"acme", "acme-super", "new", "2026-11", false},
		{"upgraded from POC: a month of POC days only is capped", []Message{{TenantID: "grown", Month: "2026-10", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices("grown", "grown-poc", full...)}},
			"grown", "grown-poc", "new", "2026-10", true},
		{"upgraded from POC: a day Pro is in force is not (November 20)", []Message{{TenantID: "grown", Month: "2026-11", Cap: 200, Devices: 250, Capped: true, DeviceKeys: devices("grown", "grown-poc", full...)}},
			"grown", "grown-super", "new", "2026-11", false},
		{"unknown tenant: never capped", nil, "nobody", "x", "new", "2026-11", false},
		{"stale message after a newer one changes nothing", []Message{
			{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices("initech", "initech-poc", full...), AsOf: testNow},
			{TenantID: "initech", Month: "2026-11", Cap: 200, Devices: 199, DeviceKeys: devices("initech", "initech-poc", full[:199]...), AsOf: testNow.Add(-time.Second)},
		}, "initech", "initech-poc", "new", "2026-11", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, _, _ := newTestState(t)
			for _, m := range c.state {
				mustApply(t, s, m)
			}
			if got := s.Capped(evt(c.tenant, c.app, c.guid), c.month); got != c.want {
				t.Errorf("Capped(%s/%s/%s, %s) = %v, want %v", c.tenant, c.app, c.guid, c.month, got, c.want)
			}
		})
	}
}

// TestCappedByDay: a gateway caps an event by the day of its timestamp in the tenant's zone:
// only on days a POC purchase and no paid one is in force (plan.Catalog.CapAt), against the
// devices of the whole month. The tenants bought POC Pro on 2025-11-15 (in force through
// 2026-11-15) and Pro on 2026-11-20, one in Shanghai (UTC+8) and one in Los Angeles (UTC−8):
// November 1-15 are capped, 16-19 have no plan, from the 20th Pro is in force.
func TestCappedByDay(t *testing.T) {
	plans, err := plan.Default()
	if err != nil {
		t.Fatal(err)
	}
	cat, err := plans.ParseTenants("t.yaml", []byte(`
tenants:
  - {id: sh, plan: pro, purchased: 2026-11-20, time_zone: Asia/Shanghai, apps: [sh-app], plan_history: [{plan: poc_pro, purchased: 2025-11-15}]}
  - {id: la, plan: pro, purchased: 2026-11-20, time_zone: America/Los_Angeles, apps: [la-app], plan_history: [{plan: poc_pro, purchased: 2025-11-15}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	full := guids("counted", 200)
	for _, c := range []struct {
		tenant, app string
		ts          string // RFC 3339
		want        bool
	}{
		{"sh", "sh-app", "2026-11-01T00:00:00+08:00", true},
		{"sh", "sh-app", "2026-11-15T23:59:59+08:00", true},
		{"sh", "sh-app", "2026-11-15T16:30:00Z", false}, // November 16, 00:30 in Shanghai: no plan, no cap
		{"sh", "sh-app", "2026-11-19T12:00:00+08:00", false},
		{"sh", "sh-app", "2026-11-19T16:00:00Z", false}, // November 20 in Shanghai: Pro
		{"la", "la-app", "2026-11-15T16:30:00Z", true},  // November 15, 08:30 in Los Angeles
		{"la", "la-app", "2026-11-16T07:59:59Z", true},  // November 15, 23:59:59
		{"la", "la-app", "2026-11-16T08:00:00Z", false}, // November 16
		{"la", "la-app", "2026-11-30T12:00:00-08:00", false},
		{"la", "la-app", "2026-10-31T12:00:00Z", true},  // an instant of October asked about November: its first day
		{"la", "la-app", "2026-12-05T12:00:00Z", false}, // of December: November's last day
	} {
		s, err := NewState(StateConfig{Kafka: bus.Plain([]string{"127.0.0.1:1"})}, cat, plans, func() time.Time { return testNow }, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, s, Message{TenantID: c.tenant, Month: "2026-11", Cap: 200, Devices: 200, Capped: true, DeviceKeys: devices(c.tenant, c.app, full...)})
		ts, err := time.Parse(time.RFC3339, c.ts)
		if err != nil {
			t.Fatal(err)
		}
		e := &event.Event{TenantID: c.tenant, AppID: c.app, GUID: "new", Type: event.Open, MiniProgramID: "mp", TS: ts}
		if got := s.Capped(e, "2026-11"); got != c.want {
			ten, _ := cat.Tenant(c.tenant)
			t.Errorf("%s at %s (%s there): Capped = %v, want %v", c.tenant, c.ts, ts.In(ten.Location()).Format(time.DateTime), got, c.want)
		}
		if got := s.Capped(&event.Event{TenantID: c.tenant, AppID: c.app, GUID: full[7], Type: event.Open, MiniProgramID: "mp", TS: ts}, "2026-11"); got {
			t.Errorf("%s at %s: a counted device refused", c.tenant, c.ts)
		}
	}
}

// TestReservations: a gateway lets in at most the cap of new devices on its own, before any
// message says so; a device it let in keeps working; places come back only when a message read
// long enough after shows that their device was never counted.
func TestReservations(t *testing.T) {
	s, clk, reg := newTestState(t)
	capped := func(guid string) bool { return s.Capped(evt("tiny", "tiny-poc", guid), "2026-11") }
	f := func(guid string, want bool) {
		t.Helper()
		if got := capped(guid); got != want {
			t.Errorf("Capped(%s) = %v, want %v", guid, got, want)
		}
	}
	// Cap 3: a, b, c get in, d does not; a is let in again.
	f("a", false)
	f("b", false)
	f("c", false)
	f("d", true)
	f("a", false)
	f("d", true)
	if got := metric(t, reg, "maumeter_caps_state_reserved_devices", ""); got != 3 {
		t.Errorf("reserved devices = %v, want 3", got)
	}
	if got := metric(t, reg, "maumeter_caps_state_capped_tenant_months", ""); got != 1 {
		t.Errorf("capped tenant-months = %v, want 1", got)
	}
	// The counter counted a and b (c's batch failed at Kafka); the message is read 1 s after
	// the reservations: c keeps its place.
	clk.advance(time.Second)
	mustApply(t, s, Message{TenantID: "tiny", Month: "2026-11", Cap: 3, Devices: 2, DeviceKeys: devices("tiny", "tiny-poc", "a", "b"), AsOf: clk.now()})
	f("d", true)
	f("c", false)
	// A message read more than the grace after c was let in, still without c: c was never
	// counted and gives its place back, to d.
	clk.advance(time.Minute)
	mustApply(t, s, Message{TenantID: "tiny", Month: "2026-11", Cap: 3, Devices: 2, DeviceKeys: devices("tiny", "tiny-poc", "a", "b"), AsOf: clk.now()})
	f("d", false)
	f("c", true)
	f("a", false)
	// Another month of the same tenant starts empty.
	if s.Capped(evt("tiny", "tiny-poc", "c"), "2026-12") {
		t.Error("2026-12 capped, want a new month uncapped")
	}
}

// metric reads one value from reg: a gauge or counter called name, with label result=result
// when result is not empty.
func metric(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	var labels []string
	if result != "" {
		labels = []string{"result", result}
	}
	v, ok, err := promtest.Value(reg, name, labels...)
	if err != nil || !ok {
		t.Fatalf("no metric %s{result=%q} (%v)", name, result, err)
	}
	return v
}

// TestStateForgets: tombstones and months beyond the ingest window leave memory.
func TestStateForgets(t *testing.T) {
	s, clk, _ := newTestState(t)
	full := Message{TenantID: "tiny", Month: "2026-11", Cap: 3, Devices: 3, Capped: true, DeviceKeys: devices("tiny", "tiny-poc", "a", "b", "c")}
	mustApply(t, s, full)
	if !s.Capped(evt("tiny", "tiny-poc", "d"), "2026-11") {
		t.Fatal("d let in before the tombstone")
	}
	s.forget(tenantMonth{TenantID: "tiny", Month: "2026-11"})
	if s.Capped(evt("tiny", "tiny-poc", "d"), "2026-11") {
		t.Error("d refused after the tombstone")
	}
	mustApply(t, s, full)
	mustApply(t, s, Message{TenantID: "tiny", Month: "2026-10", Cap: 3, Devices: 3, Capped: true, DeviceKeys: devices("tiny", "tiny-poc", "a", "b", "c")})
	// 2026-10 ends on Nov 1; it is forgotten 35 days + 1 day later, 2026-11 stays.
	clk.t = time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	if n := s.prune(clk.now()); n != 1 || s.month(tenantMonth{TenantID: "tiny", Month: "2026-10"}, false) != nil || s.month(tenantMonth{TenantID: "tiny", Month: "2026-11"}, false) == nil {
		t.Errorf("prune forgot %d months, want 2026-10 only", n)
	}
	// A message of a month long gone is not kept.
	mustApply(t, s, Message{TenantID: "tiny", Month: "2026-01", Cap: 3, Devices: 3})
	if s.month(tenantMonth{TenantID: "tiny", Month: "2026-01"}, false) != nil {
		t.Error("a message of 2026-01 was kept on 2026-12-07")
	}
}

// TestApplyRecord: what the topic may hold that a gateway must not apply.
func TestApplyRecord(t *testing.T) {
	s, _, reg := newTestState(t)
	good := `{"tenant_id":"tiny","month":"2026-11","cap":3,"devices":3,"capped":true,"device_keys":["` +
		strings.Join(devices("tiny", "tiny-poc", "a", "b", "c"), `","`) + `"],"as_of":"2026-11-20T12:00:00Z"}`
	schema := []kafka.Header{{Key: event.SchemaHeader, Value: []byte(bus.CapsSchema)}}
	rec := func(key, value string, headers []kafka.Header) *kafka.Record {
		r := &kafka.Record{Key: kafka.NewBytes([]byte(key)), Headers: headers}
		if value != "" {
			r.Value = kafka.NewBytes([]byte(value))
		}
		return r
	}
	bad := []struct {
		name string
		r    *kafka.Record
	}{
		{"no schema header", rec("tiny/2026-11", good, nil)},
		{"another schema", rec("tiny/2026-11", good, []kafka.Header{{Key: event.SchemaHeader, Value: []byte("maumeter.caps.v2")}})},
		{"key without month", rec("tiny", good, schema)},
		{"key of another month", rec("tiny/2026-10", good, schema)},
		{"broken JSON", rec("tiny/2026-11", good[:40], schema)},
		{"bad device key", rec("tiny/2026-11", strings.Replace(good, `"device_keys":["`, `"device_keys":["zz`, 1), schema)},
	}
	for _, b := range bad {
		if err := s.applyRecord(b.r, true); err == nil {
			t.Errorf("%s: applied", b.name)
		}
		for _, month := range []string{"2026-10", "2026-11"} {
			if m := s.month(tenantMonth{TenantID: "tiny", Month: month}, false); m != nil && (len(m.counted) > 0 || m.devices > 0) {
				t.Errorf("%s: %s holds %d devices", b.name, month, m.devices)
			}
		}
	}
	if got := metric(t, reg, "maumeter_caps_state_messages_total", "unknown_schema"); got != 2 {
		t.Errorf("unknown_schema counted %v, want 2", got)
	}
	if got := metric(t, reg, "maumeter_caps_state_messages_total", "undecodable"); got != 4 {
		t.Errorf("undecodable counted %v, want 4", got)
	}
	if err := s.applyRecord(rec("tiny/2026-11", good, schema), true); err != nil {
		t.Fatal(err)
	}
	if !s.Capped(evt("tiny", "tiny-poc", "d"), "2026-11") || s.Capped(evt("tiny", "tiny-poc", "b"), "2026-11") {
		t.Error("after a good record: want d refused and b let in")
	}
	if err := s.applyRecord(rec("tiny/2026-11", "", schema), true); err != nil {
		t.Fatal(err)
	}
	if s.Capped(evt("tiny", "tiny-poc", "d"), "2026-11") {
		t.Error("after a tombstone: d refused")
	}
	if got := metric(t, reg, "maumeter_caps_state_messages_total", "tombstone"); got != 1 {
		t.Errorf("tombstones counted %v, want 1", got)
	}
}
