package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// TestChaos streams over a million events while the counter is SIGKILLed six times, the Kafka
// broker is restarted once and ClickHouse is stopped for 20 seconds: the run must end on its own
// with every tenant-month's MAU equal to the truth.
//
// It stops and starts the shared services, so `make test` runs it alone, against services of
// its own (MAUMETER_CHAOS=1).
func TestChaos(t *testing.T) {
	if os.Getenv("MAUMETER_CHAOS") != "1" {
		t.Skip("run by `make test` in a step of its own (MAUMETER_CHAOS=1): it restarts the services")
	}
	kafkaScript, kafkaDir := os.Getenv("MAUMETER_KAFKA_SCRIPT"), os.Getenv("MAUMETER_KAFKA_DATADIR")
	chScript, chDir := os.Getenv("MAUMETER_CLICKHOUSE_SCRIPT"), os.Getenv("MAUMETER_CLICKHOUSE_DATADIR")
	if kafkaScript == "" || kafkaDir == "" || chScript == "" || chDir == "" {
		t.Fatal("MAUMETER_{KAFKA,CLICKHOUSE}_{SCRIPT,DATADIR} are required (scripts/with-services.sh sets them)")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	tr := generate(rng, clockNow(), 168_000)
	if tr.events < 1_000_000 {
		t.Fatalf("generated %d events, want at least 1,000,000", tr.events)
	}
	t.Logf("%d events in %d batches", tr.events, len(tr.batches))
	p := startPipeline(t, "chaos")

	service := func(script, action, dir string) {
		out, err := exec.Command(script, action, dir).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", script, action, err, out)
		}
	}
	var mu sync.Mutex
	kills := 0
	kill := func(why string) {
		mu.Lock()
		defer mu.Unlock()
		p.counter.kill()
		kills++
		t.Logf("SIGKILL counter %d (%s)", kills, why)
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		p.counter.start()
	}
	type step struct {
		at float64
		do func()
	}
	var outages sync.WaitGroup
	steps := []step{
		{0.08, func() { kill("8%") }},
		{0.18, func() {
			t.Log("restarting the Kafka broker")
			start := time.Now()
			service(kafkaScript, "stop", kafkaDir)
			service(kafkaScript, "start", kafkaDir)
			t.Logf("Kafka broker back after %s", time.Since(start).Round(time.Millisecond))
		}},
		{0.30, func() { kill("30%") }},
		{0.42, func() {
			outages.Go(func() {
				t.Log("stopping ClickHouse for 20 s")
				service(chScript, "stop", chDir)
				time.Sleep(5 * time.Second)
				kill("ClickHouse down")
				time.Sleep(15 * time.Second)
				service(chScript, "start", chDir)
				t.Log("ClickHouse back")
			})
		}},
		{0.65, func() { kill("65%") }},
		{0.85, func() { kill("85%") }},
	}
	var stepMu sync.Mutex
	start := time.Now()
	send(t, p, tr, func(done float64) {
		stepMu.Lock()
		defer stepMu.Unlock()
		for len(steps) > 0 && done >= steps[0].at {
			s := steps[0]
			steps = steps[1:]
			s.do()
		}
	})
	t.Logf("sent in %s", time.Since(start).Round(time.Millisecond))
	outages.Wait()
	kill("after sending")
	if kills < 6 {
		t.Fatalf("killed the counter %d times, want 6", kills)
	}
	p.waitCounted(t, 10*time.Minute)
	t.Logf("counted %s after the start", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitHTTPCtx(ctx, t, p, fmt.Sprintf("%s/readyz", p.countURL))
	p.check(t, tr)
}

// waitHTTPCtx waits until url answers 200 (the counter ready again after the outages).
func waitHTTPCtx(ctx context.Context, t *testing.T, p *pipeline, url string) {
	t.Helper()
	deadline, _ := ctx.Deadline()
	waitHTTP(t, p.counter, url, time.Until(deadline))
}
