// Command conformance is the Go SDK's driver of sdk/CONFORMANCE.md: e2e/sdk_test.go runs it
// against the real gateway.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	maumeter "github.com/maumeter/maumeter/sdk/go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func atoi(name string) int {
	n, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %s: %v\n", name, err)
		os.Exit(2)
	}
	return n
}

func run() error {
	mode := os.Getenv("SDK_MODE")
	sentFile, err := os.OpenFile(os.Getenv("SDK_SENT_FILE"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer sentFile.Close()
	var mu sync.Mutex
	var sent, rejected int
	c, err := maumeter.New(maumeter.Config{
		Endpoint: os.Getenv("MAUMETER_URL"), IngestKey: os.Getenv("MAUMETER_INGEST_KEY"),
		QueueFile: os.Getenv("SDK_QUEUE_FILE"), Linger: 200 * time.Millisecond, MaxBackoff: 2 * time.Second,
		OnResult: func(r maumeter.Result) {
			mu.Lock()
			defer mu.Unlock()
			switch r.Status {
			case maumeter.Sent:
				sent++
				fmt.Fprintf(sentFile, "sent\t%s\t%s\n", r.Event.ID, r.Event.GUID)
			default:
				rejected++
				fmt.Fprintf(sentFile, "rejected\t%s\t%s\t%s\n", r.Event.ID, r.Reason, r.Field)
				fmt.Fprintln(os.Stderr, "conformance:", r.Status, r.Event.ID, r.Err)
			}
		},
	})
	if err != nil {
		return err
	}
	tracked := 0
	if mode == "send" || mode == "enqueue" {
		events, guids, base := atoi("SDK_EVENTS"), atoi("SDK_GUIDS"), int64(atoi("SDK_TS_MS"))
		types := []maumeter.EventType{maumeter.Search, maumeter.PreDownload, maumeter.Open}
		for i := 0; i < events; i++ {
			e := maumeter.Event{TenantID: os.Getenv("SDK_TENANT"), AppID: os.Getenv("SDK_APP"),
				GUID: fmt.Sprintf("dev-%d", i%guids), Type: types[i%3], MiniProgramID: os.Getenv("SDK_MINI_PROGRAM"),
				Time: time.UnixMilli(base + int64(i%1000))}
			for {
				err := c.Track(e)
				if errors.Is(err, maumeter.ErrQueueFull) {
					time.Sleep(10 * time.Millisecond) // back-pressure: wait for the sender
					continue
				}
				if err != nil {
					return err
				}
				break
			}
			tracked++
		}
	} else if mode != "drain" {
		return fmt.Errorf("SDK_MODE %q: want send, enqueue or drain", mode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(atoi("SDK_DEADLINE_MS"))*time.Millisecond)
	defer cancel()
	closeErr := c.Close(ctx)
	pending := 0
	var pe *maumeter.PendingError
	if errors.As(closeErr, &pe) {
		pending = pe.Pending
	} else if closeErr != nil {
		return closeErr
	}
	mu.Lock()
	out, _ := json.Marshal(map[string]int{"tracked": tracked, "sent": sent, "rejected": rejected, "pending": pending})
	mu.Unlock()
	fmt.Println(string(out))
	switch mode {
	case "enqueue":
		if pending != tracked || sent != 0 {
			return fmt.Errorf("enqueue: %d pending and %d sent of %d tracked", pending, sent, tracked)
		}
	default:
		if pending != 0 {
			return fmt.Errorf("%s: %d events still pending at the deadline", mode, pending)
		}
	}
	return nil
}
