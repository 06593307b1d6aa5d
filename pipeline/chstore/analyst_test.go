package chstore

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/maumeter/maumeter/pkg/event"
)

// analystData is a known month: tenant acme (Asia/Shanghai), 60 devices of 3 apps first seen over
// days 1-5, each active on 1-4 consecutive days with one event a day; every 10th device also has
// a duplicate billing row and a duplicate archived event (a replay); tenant other has 7 devices.
type analystData struct {
	loc     *time.Location
	month   string
	devices []DeviceRow
	events  []EventRow
}

func newAnalystData(t *testing.T) *analystData {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	d := &analystData{loc: loc, month: "2031-03"}
	offsets := map[int32]int64{}
	types := []event.Type{event.Search, event.PreDownload, event.Open}
	add := func(tenant, app, guid string, first, days, seq int) {
		p := int32(seq % 2)
		for day := first; day < first+days; day++ {
			ts := time.Date(2031, 3, day, 10, seq, 0, 0, loc)
			typ := types[(seq+day)%3]
			mp := ""
			if typ != event.Search {
				mp = fmt.Sprintf("mp%d", (seq+day)%4)
			}
			e := event.Event{EventID: fmt.Sprintf("%s-%s-%d", tenant, guid, day), TenantID: tenant, AppID: app, GUID: guid, Type: typ, MiniProgramID: mp, TS: ts}
			off := offsets[p]
			offsets[p]++
			d.events = append(d.events, EventRow{Month: d.month, Event: e, Partition: p, Offset: off})
			if day == first {
				row := DeviceRow{TenantID: tenant, Month: d.month, AppID: app, Key: e.Key(), GUID: guid, FirstSeenAt: ts,
					FirstEvent: typ, MiniProgramID: mp, Partition: p, Offset: off}
				d.devices = append(d.devices, row)
				if seq%10 == 0 { // a replayed write of the device and of the event, later
					dup := row
					dup.Offset += 1_000_000
					d.devices = append(d.devices, dup)
					d.events = append(d.events, EventRow{Month: d.month, Event: e, Partition: p, Offset: off + 1_000_000})
				}
			}
		}
	}
	for i := range 60 {
		add("acme", []string{"a1", "a2", "a3"}[i%3], fmt.Sprintf("g%d", i), 1+i%5, 1+i%4, i)
	}
	for i := range 7 {
		add("other", "o1", fmt.Sprintf("g%d", i), 2, 1, 100+i)
	}
	return d
}

// The answers, computed here from the same data.
func (d *analystData) expect() map[string][][]string {
	acme := func(yield func(EventRow) bool) {
		for _, e := range d.events {
			if e.Event.TenantID == "acme" && e.Offset < 1_000_000 && !yield(e) {
				return
			}
		}
	}
	day := func(ts time.Time) string { return ts.In(d.loc).Format(time.DateOnly) }
	perApp := map[string]int{}
	firstDay := map[string]map[string]int{} // day → app → new devices
	for _, r := range d.devices {
		if r.TenantID != "acme" || r.Offset >= 1_000_000 {
			continue
		}
		perApp[r.AppID]++
		if firstDay[day(r.FirstSeenAt)] == nil {
			firstDay[day(r.FirstSeenAt)] = map[string]int{}
		}
		firstDay[day(r.FirstSeenAt)][r.AppID]++
	}
	out := map[string][][]string{}
	for _, app := range slices.Sorted(mapsKeys(perApp)) {
		out["app_mau"] = append(out["app_mau"], []string{app, fmt.Sprint(perApp[app])})
	}
	out["month_mau"] = [][]string{{"60"}}
	cum := 0
	for _, dd := range slices.Sorted(mapsKeys(firstDay)) {
		n := 0
		for _, app := range slices.Sorted(mapsKeys(firstDay[dd])) {
			n += firstDay[dd][app]
			out["first_seen_daily"] = append(out["first_seen_daily"], []string{dd, app, fmt.Sprint(firstDay[dd][app])})
		}
		cum += n
		out["cumulative"] = append(out["cumulative"], []string{dd, fmt.Sprint(n), fmt.Sprint(cum)})
	}
	dau, dayEvents := map[string]map[string]bool{}, map[string]int{}
	mpDevices, mpEvents := map[string]map[string]bool{}, map[string]int{}
	for e := range acme {
		dd := day(e.Event.TS)
		if dau[dd] == nil {
			dau[dd] = map[string]bool{}
		}
		dau[dd][e.Event.AppID+"/"+e.Event.GUID] = true
		dayEvents[dd]++
		if mp := e.Event.MiniProgramID; mp != "" {
			if mpDevices[mp] == nil {
				mpDevices[mp] = map[string]bool{}
			}
			mpDevices[mp][e.Event.AppID+"/"+e.Event.GUID] = true
			mpEvents[mp]++
		}
	}
	for _, dd := range slices.Sorted(mapsKeys(dau)) {
		out["dau"] = append(out["dau"], []string{dd, fmt.Sprint(len(dau[dd])), fmt.Sprint(dayEvents[dd])})
	}
	mps := slices.Sorted(mapsKeys(mpDevices))
	sort.SliceStable(mps, func(i, j int) bool { return len(mpDevices[mps[i]]) > len(mpDevices[mps[j]]) })
	for _, mp := range mps {
		out["top_mini_programs"] = append(out["top_mini_programs"], []string{mp, fmt.Sprint(len(mpDevices[mp])), fmt.Sprint(mpEvents[mp])})
	}
	// g7 of a2: first seen on day 3, active days 3-6.
	for e := range acme {
		if e.Event.GUID == "g7" {
			out["device_events"] = append(out["device_events"], []string{e.Event.TS.UTC().Format("2006-01-02 15:04:05"),
				e.Event.Type.String(), e.Event.MiniProgramID, fmt.Sprint(e.Partition), fmt.Sprint(e.Offset), fmt.Sprint(day(e.Event.TS) == "2031-03-03")})
		}
	}
	out["monthly_ranking"] = [][]string{{"acme", d.month, "60"}, {"other", d.month, "7"}}
	out["archive_vs_billing"] = [][]string{{"60", "60"}}
	return out
}

func mapsKeys[M ~map[K]V, K comparable, V any](m M) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// analystQueries reads the queries of docs/ANALYST.md: each ```sql block after a
// <!-- query: NAME --> line.
func analystQueries(t *testing.T) map[string]string {
	data, err := os.ReadFile("../../docs/ANALYST.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- query: ([a-z_]+) -->\\s*```sql\\n(.*?)```")
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		if _, dup := out[m[1]]; dup {
			t.Errorf("docs/ANALYST.md: query %s twice", m[1])
		}
		out[m[1]] = m[2]
	}
	if n := strings.Count(string(data), "```sql"); n != len(out) {
		t.Errorf("docs/ANALYST.md has %d sql blocks, %d named with <!-- query: NAME -->: name every one so this test runs it", n, len(out))
	}
	return out
}

// TestAnalystQueries runs every query of docs/ANALYST.md against the real ClickHouse on known
// data and checks each answer.
func TestAnalystQueries(t *testing.T) {
	s := openMigrated(t)
	ctx := context.Background()
	d := newAnalystData(t)
	if err := s.InsertDevices(ctx, d.devices); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertEvents(ctx, d.events, "analyst-test"); err != nil {
		t.Fatal(err)
	}
	want := d.expect()
	queries := analystQueries(t)
	for name := range want {
		if _, ok := queries[name]; !ok {
			t.Errorf("the test checks query %s, which docs/ANALYST.md does not have", name)
		}
	}
	params := clickhouse.Parameters{"tenant": "acme", "month": d.month, "tz": "Asia/Shanghai", "app": "a2", "guid": "g7"}
	for _, name := range slices.Sorted(mapsKeys(queries)) {
		exp, ok := want[name]
		if !ok {
			t.Errorf("docs/ANALYST.md query %s has no expected answer in this test", name)
			continue
		}
		got, err := queryStrings(clickhouse.Context(ctx, clickhouse.WithParameters(params)), s, queries[name])
		if err != nil {
			t.Errorf("query %s: %v\n%s", name, err, queries[name])
			continue
		}
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("query %s:\n got %v\nwant %v", name, got, exp)
		}
	}
}

// queryStrings runs q and renders every value: dates as YYYY-MM-DD, times in UTC.
func queryStrings(ctx context.Context, s *Store, q string) ([][]string, error) {
	rows, err := s.conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	var out [][]string
	for rows.Next() {
		vals := make([]any, len(types))
		for i, ct := range types {
			vals[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, err
		}
		row := make([]string, len(vals))
		for i, v := range vals {
			rv := reflect.ValueOf(v).Elem()
			for rv.Kind() == reflect.Pointer && !rv.IsNil() {
				rv = rv.Elem()
			}
			switch x := rv.Interface().(type) {
			case time.Time:
				if types[i].DatabaseTypeName() == "Date" || types[i].DatabaseTypeName() == "Date32" {
					row[i] = x.Format(time.DateOnly)
				} else {
					row[i] = x.UTC().Format("2006-01-02 15:04:05")
				}
			default:
				row[i] = fmt.Sprint(x)
			}
		}
		out = append(out, row)
	}
	return out, rows.Err()
}
