package count

import (
	"sync"
	"time"

	"github.com/maumeter/maumeter/pipeline/chstore"
	"github.com/maumeter/maumeter/pkg/calendar"
	"github.com/maumeter/maumeter/pkg/deviceset"
	"github.com/maumeter/maumeter/pkg/event"
	"github.com/maumeter/maumeter/pkg/sketch"
	"github.com/maumeter/maumeter/pkg/tenant"
)

// tenantMonth keys the state of a partition.
type tenantMonth = chstore.TenantMonth

// monthState is one partition's view of one tenant-month: the exact set and the sketches.
type monthState struct {
	set   *deviceset.Set
	sk    *sketch.Month
	dirty bool // changed since the last partition rollup
}

// partitionState is everything the counter holds for one assigned partition. The consuming
// goroutine owns it; readers (MAU reads) take mu.
type partitionState struct {
	mu      sync.Mutex
	id      int32
	ready   bool // rebuilt: reads may use it
	months  map[tenantMonth]*monthState
	pending []chstore.DeviceRow                                   // first-seen devices to insert
	late    map[tenantMonth]map[event.DeviceKey]chstore.DeviceRow // devices of closed months, to check against ClickHouse
	side    []sideRecord                                          // parked and DLQ records to store before the next commit
	next    int64                                                 // offset to commit: one past the last message applied
	dirty   bool                                                  // next moved since the last commit
	version uint64                                                // last partition rollup version written or loaded
	// committed is the offset this owner last committed (or was assigned at); -1 if none.
	committed int64
}

func newPartitionState(id int32) *partitionState {
	return &partitionState{id: id, committed: -1, months: map[tenantMonth]*monthState{}, late: map[tenantMonth]map[event.DeviceKey]chstore.DeviceRow{}}
}

func (p *partitionState) month(tm tenantMonth) *monthState {
	m := p.months[tm]
	if m == nil {
		m = &monthState{set: deviceset.New(1024), sk: sketch.NewMonth()}
		p.months[tm] = m
	}
	return m
}

// apply counts one event read at offset. closed reports whether a tenant-month is closed (its
// devices then go through the late path). It must be called with mu held.
func (p *partitionState) apply(e *event.Event, t *tenant.Tenant, offset int64, closed func(tenantMonth) bool) {
	loc := t.Location()
	tm := tenantMonth{TenantID: e.TenantID, Month: calendar.MonthOf(e.TS, loc).String()}
	key := e.Key()
	row := chstore.DeviceRow{
		TenantID: e.TenantID, Month: tm.Month, AppID: e.AppID, Key: key, GUID: e.GUID,
		FirstSeenAt: e.TS, FirstEvent: e.Type, MiniProgramID: e.MiniProgramID,
		Partition: p.id, Offset: offset,
	}
	if _, open := p.months[tm]; !open && closed(tm) {
		late := p.late[tm]
		if late == nil {
			late = map[event.DeviceKey]chstore.DeviceRow{}
			p.late[tm] = late
		}
		if _, seen := late[key]; !seen {
			late[key] = row
		}
		return
	}
	m := p.month(tm)
	m.sk.Add(key, e.AppID, e.MiniProgramID, e.TS.In(loc).Format(time.DateOnly))
	m.dirty = true
	if m.set.Add(key) {
		p.pending = append(p.pending, row)
	}
}

// rollups snapshots the dirty tenant-months as partition rollups of the next version and clears
// their dirty flags. It must be called with mu held.
func (p *partitionState) rollups(now time.Time) ([]chstore.PartitionRollup, error) {
	version := max(uint64(now.UnixNano()), p.version+1)
	var out []chstore.PartitionRollup
	for tm, m := range p.months {
		if !m.dirty {
			continue
		}
		sk, err := m.sk.MarshalBinary()
		if err != nil {
			return nil, err
		}
		out = append(out, chstore.PartitionRollup{
			TenantID: tm.TenantID, Month: tm.Month, Partition: p.id, Version: version, NextOffset: p.next,
			ExactDevices: uint64(m.set.Len()), HLLEstimate: m.sk.Estimate(), Sketches: sk,
		})
	}
	return out, nil
}

// stored marks the rollups of version v as written.
func (p *partitionState) stored(v uint64) {
	p.version = max(p.version, v)
	for _, m := range p.months {
		m.dirty = false
	}
}

// dropClosed forgets the tenant-months that closed: their sets leave memory.
func (p *partitionState) dropClosed(closed func(tenantMonth) bool) int {
	n := 0
	for tm := range p.months {
		if closed(tm) {
			delete(p.months, tm)
			n++
		}
	}
	return n
}

func (p *partitionState) devices() int {
	n := 0
	for _, m := range p.months {
		n += m.set.Len()
	}
	return n
}
