// Package yamlschema checks YAML documents (the tenant and plan catalogues) against JSON schemas
// (draft 2020-12, github.com/santhosh-tekuri/jsonschema/v6) and reports every violation as the
// path of the field and a message an operator can act on, e.g.
//
//	contract.unit_price_usd: "abc" is not a decimal
//
// A schema may annotate a subschema with "errorMessage": when that subschema fails, the message
// is the offending value followed by the annotation, instead of the validator's generic one.
// The package does no I/O and keeps nothing mutable: a *Schema is safe for concurrent use.
package yamlschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"gopkg.in/yaml.v3"
)

var english = message.NewPrinter(language.English)

// maxNodes bounds the values Decode builds, aliases expanded: a catalogue has thousands, an
// alias bomb billions.
const maxNodes = 1 << 20

// Schema is a compiled JSON schema and its source, which holds the errorMessage annotations.
type Schema struct {
	schema *jsonschema.Schema
	doc    any
}

// Compile compiles a JSON schema. name identifies it in errors and in schema locations.
func Compile(name string, data []byte) (*Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat() // "format": "date" is a check, not an annotation
	loc := "mem:///" + url.PathEscape(name)
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	s, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	return &Schema{schema: s, doc: doc}, nil
}

// Violation is one way a document breaks its schema.
type Violation struct {
	Path    []Step // from the document's root to the offending field
	Message string // what is wrong, starting with the offending value when there is one
}

// Step is one key of a mapping or one index of a sequence.
type Step struct {
	Key   string
	Index int // when IsIndex
	// IsIndex says the step is an index of a sequence, not a key.
	IsIndex bool
}

// Field formats Path[from:] as it reads in YAML: contract.unit_price_usd, apps[2].
func (v Violation) Field(from int) string {
	return FormatPath(v.Path[min(from, len(v.Path)):])
}

// String is the whole path and the message.
func (v Violation) String() string {
	if len(v.Path) == 0 {
		return v.Message
	}
	return v.Field(0) + ": " + v.Message
}

// EntryError makes v an error that names the file, the entry of the top-level list it falls in
// (kind plus its id, when idOf finds one in the entry, else list[i]) and the field within it:
// `tenants.yaml: tenant "acme": contract.unit_price_usd: …`. Outside the list it names the
// field from the root.
func EntryError(name string, doc any, v Violation, list, kind string, idOf func(entry map[string]any) (string, bool)) error {
	p := v.Path
	if len(p) >= 2 && p[0].Key == list && p[1].IsIndex {
		who := fmt.Sprintf("%s[%d]", list, p[1].Index)
		if entries, ok := doc.(map[string]any)[list].([]any); ok {
			if e, ok := entries[p[1].Index].(map[string]any); ok {
				if id, ok := idOf(e); ok {
					who = fmt.Sprintf("%s %q", kind, id)
				}
			}
		}
		if len(p) == 2 {
			return fmt.Errorf("%s: %s: %s", name, who, v.Message)
		}
		return fmt.Errorf("%s: %s: %s: %s", name, who, v.Field(2), v.Message)
	}
	if len(p) == 0 {
		return fmt.Errorf("%s: %s", name, v.Message)
	}
	return fmt.Errorf("%s: %s: %s", name, v.Field(0), v.Message)
}

// FormatPath formats a path as it reads in YAML: contract.unit_price_usd, apps[2].
func FormatPath(path []Step) string {
	var b strings.Builder
	for _, s := range path {
		if s.IsIndex {
			fmt.Fprintf(&b, "[%d]", s.Index)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.Key)
	}
	return b.String()
}

// Validate checks doc (a value from Decode) against s and returns every violation, sorted by
// path; none when doc is valid.
func (s *Schema) Validate(doc any) []Violation {
	err := s.schema.Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Violation{{Message: err.Error()}}
	}
	var out []Violation
	seen := map[string]bool{}
	s.collect(doc, ve, func(v Violation) {
		if k := v.String(); !seen[k] {
			seen[k] = true
			out = append(out, v)
		}
	})
	slices.SortStableFunc(out, func(a, b Violation) int { return comparePaths(a.Path, b.Path) })
	return out
}

// collect reports the leaves of the error tree: the keywords that failed.
func (s *Schema) collect(doc any, e *jsonschema.ValidationError, report func(Violation)) {
	path, value, ok := locate(doc, e.InstanceLocation)
	if !ok { // cannot happen: the validator walked the same document
		report(Violation{Message: e.Error()})
		return
	}
	// A subschema with its own message speaks for all that failed inside it (anyOf branches,
	// type and pattern); a $ref only forwards to the subschema it names.
	switch e.ErrorKind.(type) {
	case *kind.Reference, *kind.Schema:
	default:
		if msg, ok := s.annotation(e.SchemaURL); ok {
			report(Violation{Path: path, Message: display(value) + " " + msg})
			return
		}
	}
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			s.collect(doc, c, report)
		}
		return
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			report(Violation{Path: append(slices.Clip(path), Step{Key: m}), Message: "required"})
		}
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			report(Violation{Path: append(slices.Clip(path), Step{Key: p}), Message: "unknown field"})
		}
	default:
		report(Violation{Path: path, Message: describe(e.ErrorKind, value)})
	}
}

// annotation is the errorMessage of the subschema at schemaURL, if it has one.
func (s *Schema) annotation(schemaURL string) (string, bool) {
	_, frag, _ := strings.Cut(schemaURL, "#")
	frag, err := url.PathUnescape(frag)
	if err != nil {
		return "", false
	}
	node := s.doc
	if frag != "" {
		for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
			tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
			switch n := node.(type) {
			case map[string]any:
				node = n[tok]
			case []any:
				i, err := strconv.Atoi(tok)
				if err != nil || i < 0 || i >= len(n) {
					return "", false
				}
				node = n[i]
			default:
				return "", false
			}
		}
	}
	obj, _ := node.(map[string]any)
	msg, ok := obj["errorMessage"].(string)
	return msg, ok
}

// describe is a generic message for a failed keyword.
func describe(k jsonschema.ErrorKind, value any) string {
	v := display(value)
	switch k := k.(type) {
	case *kind.Type:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = article(w)
		}
		return fmt.Sprintf("%s is not %s", v, strings.Join(want, " or "))
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = display(w)
		}
		return fmt.Sprintf("%s is not one of %s", v, strings.Join(want, ", "))
	case *kind.Const:
		return fmt.Sprintf("%s must be %s", v, display(k.Want))
	case *kind.Minimum:
		return fmt.Sprintf("%s is below the minimum, %s", v, k.Want.RatString())
	case *kind.Maximum:
		return fmt.Sprintf("%s is above the maximum, %s", v, k.Want.RatString())
	case *kind.MinLength:
		return fmt.Sprintf("%s is shorter than %d characters", v, k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("%s is longer than %d characters", v, k.Want)
	case *kind.MinItems:
		if k.Want == 1 {
			return "must not be empty"
		}
		return fmt.Sprintf("needs at least %d entries", k.Want)
	case *kind.MinProperties:
		return "must not be empty"
	case *kind.UniqueItems:
		if arr, ok := value.([]any); ok && k.Duplicates[1] < len(arr) {
			return fmt.Sprintf("%s listed twice", display(arr[k.Duplicates[1]]))
		}
	case *kind.Pattern:
		return fmt.Sprintf("%s does not match %s", v, k.Want)
	case *kind.Format:
		return fmt.Sprintf("%s is not a valid %s", v, k.Want)
	case *kind.FalseSchema:
		return "is not allowed"
	}
	return k.LocalizedString(english)
}

func article(jsonType string) string {
	switch jsonType {
	case "integer", "object":
		return "an " + jsonType
	case "array":
		return "a list"
	case "null":
		return "null"
	case "boolean":
		return "true or false"
	}
	return "a " + jsonType
}

// display shows a value of the document in a message.
func display(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case json.Number:
		return v.String()
	}
	return fmt.Sprint(v)
}

// locate follows a JSON-pointer's tokens through doc, noting which steps index a list.
func locate(doc any, tokens []string) ([]Step, any, bool) {
	path := make([]Step, 0, len(tokens))
	for _, tok := range tokens {
		switch n := doc.(type) {
		case map[string]any:
			path = append(path, Step{Key: tok})
			doc = n[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) {
				return nil, nil, false
			}
			path = append(path, Step{Key: tok, Index: i, IsIndex: true})
			doc = n[i]
		default:
			return nil, nil, false
		}
	}
	return path, doc, true
}

func comparePaths(a, b []Step) int {
	for i := range min(len(a), len(b)) {
		if a[i].IsIndex && b[i].IsIndex {
			if c := a[i].Index - b[i].Index; c != 0 {
				return c
			}
			continue
		}
		if c := strings.Compare(a[i].Key, b[i].Key); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}

// Decode parses one YAML document into the values a JSON decoder would give (map[string]any,
// []any, string, bool, nil, and numbers as int64, uint64, json.Number or float64), which a JSON
// schema can check. Unlike decoding YAML into an interface, it keeps timestamps as the text
// written (2026-03-15 stays a string), refuses duplicate and non-scalar keys, and expands
// aliases; a number JSON cannot hold (.inf, 1e999) stays the text written. YAML reads an
// unquoted all-digit string (a hex key id, an app id) as a number: schemas accept numbers for
// such fields and the typed decode reads their text. Merge keys (<<) are not expanded: a schema
// without them sees an unknown field. An empty document is nil. Errors name the line.
func Decode(data []byte) (any, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	if root.Kind == 0 { // empty document
		return nil, nil
	}
	budget := maxNodes
	return convert(&root, &budget)
}

func convert(n *yaml.Node, budget *int) (any, error) {
	if *budget--; *budget < 0 {
		return nil, fmt.Errorf("line %d: document too large (aliases expand to over %d values)", n.Line, maxNodes)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return convert(n.Content[0], budget)
	case yaml.AliasNode:
		return convert(n.Alias, budget)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := convert(c, budget)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind == yaml.AliasNode {
				k = k.Alias
			}
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: a mapping key must be a scalar", k.Line)
			}
			if _, dup := out[k.Value]; dup {
				return nil, fmt.Errorf("line %d: key %q listed twice", k.Line, k.Value)
			}
			v, err := convert(n.Content[i+1], budget)
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		return out, nil
	case yaml.ScalarNode:
		return scalar(n)
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func scalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		err := n.Decode(&b)
		return b, err
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			return i, nil
		}
		var u uint64
		if err := n.Decode(&u); err == nil {
			return u, nil
		}
		return n.Value, nil
	case "!!float":
		if isDigits(n.Value) { // YAML's reading of an integer beyond 64 bits: keep it exact
			return json.Number(n.Value), nil
		}
		var f float64
		if err := n.Decode(&f); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return f, nil
		}
		// .inf, .nan, or a hex id such as 1234e56789012345 that overflows: a JSON document has no
		// such number, so the text stands for itself.
		return n.Value, nil
	}
	// !!str, !!timestamp (kept as written), !!binary and custom tags: the text.
	return n.Value, nil
}

// Check decodes the YAML document of file name and validates it against s. It returns the
// decoded document (nil for an empty one), the decoding error prefixed with name, or every
// violation joined, each made an error by explain (which names the file and, where it can, the
// entry and the field).
func (s *Schema) Check(name string, data []byte, explain func(doc any, v Violation) error) (any, error) {
	doc, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if doc == nil {
		return nil, nil
	}
	if vs := s.Validate(doc); len(vs) > 0 {
		errs := make([]error, len(vs))
		for i, v := range vs {
			errs[i] = explain(doc, v)
		}
		return nil, errors.Join(errs...)
	}
	return doc, nil
}
