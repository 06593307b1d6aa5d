package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/maumeter/maumeter/pkg/tenant"
)

const keysUsage = `usage: maumeter keys <new|list|check> [flags]

  new   --tenant T [--apps a,b] [--note TEXT]   make an ingest key; print it once and its catalogue line
  list                                          list the ingest keys of the catalogue (never a secret)
  check [--key K]                               say which tenant and key K (or a line on stdin) is

Keys live hashed in the tenant catalogue, under each tenant's ingest_keys. To rotate a key: add
the new one, let the SDKs move to it, remove the old one; the gateway reloads the keys when the
file changes (--keys-reload), no restart needed.`

// runKeys manages ingest keys: they live in the tenant catalogue, hashed.
func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, keysUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: a subcommand is required", errUsage)
		}
		return nil
	}
	o := &options{}
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	o.commonFlags(fs)
	switch args[0] {
	case "new":
		id := fs.String("tenant", "", "tenant the key belongs to (required)")
		apps := fs.String("apps", "", "comma-separated apps the key may send for (default: every app of the tenant)")
		note := fs.String("note", "", "informational note stored with the key, e.g. who holds it")
		if err := parseFlags(fs, args[1:], stderr); err != nil {
			return err
		}
		if *id == "" {
			return fmt.Errorf("%w: --tenant is required", errUsage)
		}
		c, err := tenant.Load(o.tenants)
		if err != nil {
			return err
		}
		t, ok := c.Tenant(*id)
		if !ok {
			return fmt.Errorf("%w: tenant %q is not in %s", errUsage, *id, o.tenants)
		}
		var scope []string
		for a := range strings.SplitSeq(*apps, ",") {
			if a = strings.TrimSpace(a); a != "" {
				scope = append(scope, a)
			}
		}
		key, entry, err := tenant.NewKey(rand.Reader, t, scope, time.Now().UTC())
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		entry.Note = *note
		what := "every app of the tenant"
		if len(scope) > 0 {
			what = strings.Join(scope, ", ")
		}
		fmt.Fprintf(stdout, "# ingest key of tenant %s for %s; shown only now, the catalogue keeps its hash:\n%s\n", t.ID, what, key)
		fmt.Fprintf(stdout, "# add under tenant %s's ingest_keys in %s (a running gateway reloads it within --keys-reload):\n%s\n", t.ID, o.tenants, entry.YAML())
		return nil
	case "list":
		if err := parseFlags(fs, args[1:], stderr); err != nil {
			return err
		}
		c, err := tenant.Load(o.tenants)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tKEY ID\tAPPS\tCREATED\tNOTE")
		for _, k := range c.Keys() {
			apps := "*"
			if len(k.Apps) > 0 {
				apps = strings.Join(k.Apps, ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Tenant(), k.ID, apps, k.Created, k.Note)
		}
		return tw.Flush()
	case "check":
		key := fs.String("key", "", "the key (default: the first line of standard input)")
		if err := parseFlags(fs, args[1:], stderr); err != nil {
			return err
		}
		if *key == "" {
			line, err := bufio.NewReader(os.Stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			*key = strings.TrimSpace(line)
		}
		c, err := tenant.Load(o.tenants)
		if err != nil {
			return err
		}
		k, err := c.Keyring().Authenticate(*key)
		if err != nil {
			return exitCode{1, fmt.Sprintf("not a key of %s: %v", o.tenants, err)}
		}
		apps := "every app of the tenant"
		if len(k.Apps) > 0 {
			apps = strings.Join(k.Apps, ", ")
		}
		fmt.Fprintf(stdout, "tenant %s, key %s, apps: %s\n", k.Tenant(), k.ID, apps)
		return nil
	default:
		fmt.Fprintln(stderr, keysUsage)
		return fmt.Errorf("%w: unknown subcommand %q", errUsage, args[0])
	}
}

// parseKeyList parses "tenant=key,tenant=key" (the loadgen's --ingest-keys).
func parseKeyList(s string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		t, k, ok := strings.Cut(item, "=")
		if !ok || t == "" || k == "" {
			return nil, fmt.Errorf("%w: ingest keys: %q is not tenant=key", errUsage, item)
		}
		out[t] = k
	}
	return out, nil
}

// demoKeys makes one ingest key per tenant of c for a process that also runs the gateway (the
// demo): the keyring is the catalogue's keys plus these, and the keys go to the load generator.
func demoKeys(c *tenant.Catalog) (*tenant.Keyring, map[string]string, error) {
	keys := c.Keys()
	plain := map[string]string{}
	for _, t := range c.Tenants {
		key, entry, err := tenant.NewKey(rand.Reader, t, nil, time.Now().UTC())
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, entry)
		plain[t.ID] = key
	}
	ring, err := tenant.NewKeyring(keys...)
	return ring, plain, err
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
