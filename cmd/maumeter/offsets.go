package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/maumeter/maumeter/pipeline/bus"
	"github.com/maumeter/maumeter/pipeline/chstore"
)

// runOffsets: the counters' offsets on the events topic. `status` shows, per partition, the
// log start, the end, the counters' committed offset and any range deleted before it was read;
// `accept-loss` records such a range as accepted (ClickHouse kafka_offset_losses), after which
// the counter that stopped the partition commits past it and resumes.
func runOffsets(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "status" && args[0] != "accept-loss") {
		fmt.Fprintln(stderr, "usage: maumeter offsets status|accept-loss [flags]")
		return fmt.Errorf("%w: want status or accept-loss", errUsage)
	}
	sub := args[0]
	o := &options{now: now}
	fs := flag.NewFlagSet("offsets "+sub, flag.ContinueOnError)
	o.commonFlags(fs)
	o.kafkaFlags(fs)
	o.clickhouseFlags(fs)
	fs.StringVar(&o.group, "count-group", bus.CountGroup, "consumer group of the counters")
	partition := fs.Int("partition", -1, "accept-loss: the partition whose lost range to accept")
	by := fs.String("by", os.Getenv("USER"), "accept-loss: who accepts the loss (recorded for the auditor)")
	reason := fs.String("reason", "", "accept-loss: why (recorded for the auditor)")
	if err := parseFlags(fs, args[1:], stderr); err != nil {
		return err
	}
	brokers, err := o.kafkaNet()
	if err != nil {
		return err
	}
	if len(brokers.Brokers) == 0 {
		return fmt.Errorf("%w: --kafka-brokers (MAUMETER_KAFKA_BROKERS) is required", errUsage)
	}
	if sub == "accept-loss" {
		switch {
		case *partition < 0:
			return fmt.Errorf("%w: accept-loss: --partition is required", errUsage)
		case *by == "":
			return fmt.Errorf("%w: accept-loss: --by (who accepts the loss) is required", errUsage)
		}
	}
	log, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	parts, err := partitionOffsets(ctx, brokers, o.topic, o.group)
	if err != nil {
		return err
	}
	store, err := o.openStore(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	if sub == "status" {
		losses, err := store.OffsetLosses(ctx, o.topic, o.group)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "topic %s, group %s\n%-9s %12s %12s %12s  %s\n", o.topic, o.group, "partition", "log start", "committed", "end", "state")
		for _, p := range parts {
			fmt.Fprintf(stdout, "%-9d %12d %12s %12d  %s\n", p.id, p.first, p.committedString(), p.end, p.state())
		}
		for _, l := range losses {
			fmt.Fprintf(stdout, "accepted loss: partition %d offsets [%d, %d) (%d records), by %s at %s: %s\n",
				l.Partition, l.From, l.To, l.To-l.From, l.AcceptedBy, l.AcceptedAt.UTC().Format(time.RFC3339), l.Reason)
		}
		return nil
	}
	i := slices.IndexFunc(parts, func(p partOffsets) bool { return p.id == *partition })
	if i < 0 {
		return fmt.Errorf("%w: accept-loss: topic %s has no partition %d", errUsage, o.topic, *partition)
	}
	p := parts[i]
	if !p.hasCommit || p.committed >= p.first {
		return fmt.Errorf("accept-loss: partition %d of %s lost nothing: the group %s committed %s and the log starts at %d",
			p.id, o.topic, o.group, p.committedString(), p.first)
	}
	l := chstore.OffsetLoss{Topic: o.topic, Group: o.group, Partition: int32(p.id), From: p.committed, To: p.first,
		AcceptedBy: *by, Reason: *reason}
	if err := store.InsertOffsetLoss(ctx, l); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "accepted: partition %d of %s, offsets [%d, %d) (%d records) never counted, by %s; recorded in kafka_offset_losses. "+
		"The counter that owns the partition resumes at %d within its --close-interval.\n", p.id, o.topic, l.From, l.To, l.To-l.From, *by, l.To)
	return nil
}

type partOffsets struct {
	id                    int
	first, end, committed int64
	hasCommit             bool
}

func (p partOffsets) committedString() string {
	if !p.hasCommit {
		return "none"
	}
	return fmt.Sprint(p.committed)
}

func (p partOffsets) state() string {
	if p.hasCommit && p.committed < p.first {
		return fmt.Sprintf("LOST [%d, %d) (%d records deleted before they were counted): maumeter offsets accept-loss --partition %d",
			p.committed, p.first, p.first-p.committed, p.id)
	}
	return "ok"
}

func partitionOffsets(ctx context.Context, brokers *bus.Net, topic, group string) ([]partOffsets, error) {
	first, err := bus.FirstOffsets(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	end, err := bus.EndOffsets(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	committed, err := bus.CommittedOffsets(ctx, brokers, group, topic)
	if err != nil {
		return nil, err
	}
	var out []partOffsets
	for id, f := range first {
		c, ok := committed[id]
		out = append(out, partOffsets{id: id, first: f, end: end[id], committed: c, hasCommit: ok})
	}
	slices.SortFunc(out, func(a, b partOffsets) int { return a.id - b.id })
	return out, nil
}
