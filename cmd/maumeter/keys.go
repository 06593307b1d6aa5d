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

  new   --tenant T [--apps a,b] [--note TEXT]   make an ingest key (mmk_): sends T's events, reads nothing
  new   --read --tenant T [--note TEXT]          make a read key (mmr_): reads T's MAU and invoices only
  new   --operator [--note TEXT]                 make an operator key (mmo_): reads every tenant's MAU and invoices
  list                                          list the keys of the catalogue, every kind (never a secret)
  check [--key K]                               say what key K (or a line on stdin) is and whose

Each command prints the key once and the line to add to the catalogue: under the tenant's
ingest_keys or read_keys, or under the top-level operator_keys; the catalogue keeps only hashes.
A key works only as its kind, so a line under the wrong field authenticates nothing. To rotate a
key: add the new one, move its users to it, remove the old one; running roles reload the keys
when the file changes (--keys-reload), no restart needed.`

// runKeys manages the API's keys: they live in the tenant catalogue, hashed.
func runKeys(ctx context.Context, now func() time.Time, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, keysUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: a subcommand is required", errUsage)
		}
		return nil
	}
	o := &options{now: now}
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	o.commonFlags(fs)
	o.plansFlags(fs)
	switch args[0] {
	case "new":
		id := fs.String("tenant", "", "tenant the key belongs to (required but with --operator)")
		apps := fs.String("apps", "", "ingest keys: comma-separated apps the key may send for (default: every app of the tenant)")
		read := fs.Bool("read", false, "make a read key of --tenant: reads its MAU and invoices, sends nothing")
		operator := fs.Bool("operator", false, "make an operator key: reads every tenant's MAU and invoices (no --tenant)")
		note := fs.String("note", "", "informational note stored with the key, e.g. who holds it")
		if err := parseFlags(fs, args[1:], stderr); err != nil {
			return err
		}
		switch {
		case *operator && *id != "":
			return fmt.Errorf("%w: --operator keys read every tenant: drop --tenant (or use --read --tenant %s)", errUsage, *id)
		case (*read || *operator) && *apps != "":
			return fmt.Errorf("%w: --apps restricts ingest keys; read and operator keys read every app", errUsage)
		case !*operator && *id == "":
			return fmt.Errorf("%w: --tenant is required (or --operator)", errUsage)
		}
		_, c, err := o.loadCatalogs()
		if err != nil {
			return err
		}
		created := now().UTC()
		if *operator {
			key, entry, err := tenant.NewOperatorKey(rand.Reader, created)
			if err != nil {
				return err
			}
			entry.Note = *note
			fmt.Fprintf(stdout, "# operator key: reads the MAU and invoices of every tenant; shown only now, the catalogue keeps its hash:\n%s\n", key)
			fmt.Fprintf(stdout, "# add under operator_keys (top level) in %s (running roles reload it within --keys-reload):\n%s\n", o.tenants, entry.YAML())
			return nil
		}
		t, ok := c.Tenant(*id)
		if !ok {
			return fmt.Errorf("%w: tenant %q is not in %s", errUsage, *id, o.tenants)
		}
		if *read {
			key, entry, err := tenant.NewReadKey(rand.Reader, t, created)
			if err != nil {
				return err
			}
			entry.Note = *note
			fmt.Fprintf(stdout, "# read key of tenant %s: reads its MAU and invoices only; shown only now, the catalogue keeps its hash:\n%s\n", t.ID, key)
			fmt.Fprintf(stdout, "# add under tenant %s's read_keys in %s (running roles reload it within --keys-reload):\n%s\n", t.ID, o.tenants, entry.YAML())
			return nil
		}
		var scope []string
		for a := range strings.SplitSeq(*apps, ",") {
			if a = strings.TrimSpace(a); a != "" {
				scope = append(scope, a)
			}
		}
		key, entry, err := tenant.NewKey(rand.Reader, t, scope, created)
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
		_, c, err := o.loadCatalogs()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tTENANT\tKEY ID\tAPPS\tCREATED\tNOTE")
		for _, k := range c.Keys() {
			apps := "*"
			if len(k.Apps) > 0 {
				apps = strings.Join(k.Apps, ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", tenant.KindIngest, k.Tenant(), k.ID, apps, k.Created, k.Note)
		}
		for _, k := range c.ReadKeys() {
			who := k.Tenant()
			if k.Kind() == tenant.KindOperator {
				who = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Kind(), who, k.ID, "*", k.Created, k.Note)
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
		_, c, err := o.loadCatalogs()
		if err != nil {
			return err
		}
		if kind, err := tenant.KindOf(*key); err == nil && kind != tenant.KindIngest {
			k, err := c.ReadKeyring().Authenticate(*key)
			if err != nil {
				return exitCode{1, fmt.Sprintf("not a key of %s: %v", o.tenants, err)}
			}
			if k.Kind() == tenant.KindOperator {
				fmt.Fprintf(stdout, "operator key %s: reads the MAU and invoices of every tenant\n", k.ID)
			} else {
				fmt.Fprintf(stdout, "tenant %s, read key %s: reads the tenant's MAU and invoices\n", k.Tenant(), k.ID)
			}
			return nil
		}
		k, err := c.Keyring().Authenticate(*key)
		if err != nil {
			return exitCode{1, fmt.Sprintf("not a key of %s: %v", o.tenants, err)}
		}
		apps := "every app of the tenant"
		if len(k.Apps) > 0 {
			apps = strings.Join(k.Apps, ", ")
		}
		fmt.Fprintf(stdout, "tenant %s, ingest key %s, apps: %s\n", k.Tenant(), k.ID, apps)
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

// demoKeys makes one ingest key and one read key per tenant of c for a process that also runs
// the gateway and the reads (the demo): the keyrings are the catalogue's keys plus these, and
// the keys go to the load generator and to the demo's own reads. created is their creation time.
func demoKeys(c *tenant.Catalog, created time.Time) (ingest *tenant.Keyring, read *tenant.ReadKeyring, ingestKeys, readKeys map[string]string, err error) {
	keys, rkeys := c.Keys(), c.ReadKeys()
	ingestKeys, readKeys = map[string]string{}, map[string]string{}
	for _, t := range c.Tenants {
		key, entry, err := tenant.NewKey(rand.Reader, t, nil, created)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		keys = append(keys, entry)
		ingestKeys[t.ID] = key
		rkey, rentry, err := tenant.NewReadKey(rand.Reader, t, created)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		rkeys = append(rkeys, rentry)
		readKeys[t.ID] = rkey
	}
	if ingest, err = tenant.NewKeyring(keys...); err != nil {
		return nil, nil, nil, nil, err
	}
	if read, err = tenant.NewReadKeyring(rkeys...); err != nil {
		return nil, nil, nil, nil, err
	}
	return ingest, read, ingestKeys, readKeys, nil
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
