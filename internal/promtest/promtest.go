// Package promtest reads metrics back from a Prometheus registry, for tests.
package promtest

import "github.com/prometheus/client_golang/prometheus"

// Value returns the value of a counter or gauge series of the metric name whose labels include
// every name/value pair of labels (pairs: "reason", "bad_json"); with no pairs, the first
// series. ok is false when there is no such series.
func Value(g prometheus.Gatherer, name string, labels ...string) (v float64, ok bool, err error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, false, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				match = match && have[labels[i]] == labels[i+1]
			}
			if match {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue(), true, nil
			}
		}
	}
	return 0, false, nil
}
