// Command relay is a small example of the Go SDK: a server that receives its super app's
// mini-program events (here: lines "guid event mini_program_id" on stdin) and relays them to
// maumeter, with a persistent queue so that nothing is lost while maumeter is unreachable.
//
//	MAUMETER_URL=http://127.0.0.1:8080 MAUMETER_INGEST_KEY=mk_... \
//	  go run ./examples/relay -tenant acme -app acme-super < events.txt
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	maumeter "github.com/maumeter/maumeter/sdk/go"
)

func main() {
	tenant := flag.String("tenant", "", "tenant id")
	app := flag.String("app", "", "app id")
	queue := flag.String("queue", "maumeter-queue.log", "persistent queue file")
	flag.Parse()
	c, err := maumeter.New(maumeter.Config{
		Endpoint: os.Getenv("MAUMETER_URL"), IngestKey: os.Getenv("MAUMETER_INGEST_KEY"), QueueFile: *queue,
		OnResult: func(r maumeter.Result) {
			switch {
			case errors.Is(r.Err, maumeter.ErrPOCCapReached):
				log.Printf("device %s not counted: the POC plan's cap is reached; upgrade the plan", r.Event.GUID)
			case r.Status != maumeter.Sent:
				log.Printf("event %s %s: %v", r.Event.ID, r.Status, r.Err)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case l, ok := <-lines:
			if !ok {
				break loop
			}
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			e := maumeter.Event{TenantID: *tenant, AppID: *app, GUID: f[0], Type: maumeter.EventType(f[1]), Time: time.Now()}
			if len(f) > 2 {
				e.MiniProgramID = f[2]
			}
			if err := c.Track(e); err != nil {
				log.Printf("not tracked: %v", err)
			}
		}
	}
	// Flush for up to 10 s; what is left stays in the queue file for the next start.
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
	}
}
