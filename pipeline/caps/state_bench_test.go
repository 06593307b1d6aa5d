package caps

import (
	"fmt"
	"testing"

	"github.com/maumeter/maumeter/pkg/event"
)

// BenchmarkCapped is the gateway's cost per event of a POC tenant: a month full with 500
// counted devices, asked for counted devices (let in) and for new ones (refused), from every
// CPU at once.
func BenchmarkCapped(b *testing.B) {
	for _, tc := range []struct {
		name   string
		prefix string
	}{{"counted", "counted"}, {"new", "new"}} {
		b.Run(tc.name, func(b *testing.B) {
			s, _, _ := newTestState(b)
			mustApply(b, s, Message{TenantID: "tiny", Month: "2026-11", Cap: 3, Devices: 500, Capped: true,
				DeviceKeys: devices("tiny", "tiny-poc", guids("counted", 500)...)})
			evs := make([]*event.Event, 500)
			for i := range evs {
				evs[i] = evt("tiny", "tiny-poc", fmt.Sprintf("%s-%03d", tc.prefix, i))
			}
			want := tc.prefix == "new"
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if s.Capped(evs[i%len(evs)], "2026-11") != want {
						b.Error("wrong answer")
						return
					}
					i++
				}
			})
		})
	}
}
