package yamlschema

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	f := func(yaml, want string) {
		t.Helper()
		v, err := Decode([]byte(yaml))
		got := ""
		if err != nil {
			got = "error: " + err.Error()
		} else {
			got = fmt.Sprintf("%#v", v)
		}
		if got != want {
			t.Errorf("Decode(%q):\n got %s\nwant %s", yaml, got, want)
		}
	}
	f(``, `<nil>`)
	f(`# only a comment`, `<nil>`)
	f(`a: 2026-03-15`, `map[string]interface {}{"a":"2026-03-15"}`) // a timestamp stays the text
	f(`a: "0.012"`, `map[string]interface {}{"a":"0.012"}`)
	f(`a: 0.012`, `map[string]interface {}{"a":0.012}`)
	f(`a: 250000`, `map[string]interface {}{"a":250000}`)
	f(`a: 1_000`, `map[string]interface {}{"a":1000}`)
	f(`a: 18446744073709551615`, `map[string]interface {}{"a":0xffffffffffffffff}`)
	f(`a: 123456789012345678901234567890`, `map[string]interface {}{"a":"123456789012345678901234567890"}`) // json.Number
	f(`a: .inf`, `map[string]interface {}{"a":".inf"}`)
	f(`a: 1234e56789012345`, `map[string]interface {}{"a":"1234e56789012345"}`)
	f(`a: [~, true, x]`, `map[string]interface {}{"a":[]interface {}{interface {}(nil), true, "x"}}`)
	f("a: &x [1]\nb: *x", `map[string]interface {}{"a":[]interface {}{1}, "b":[]interface {}{1}}`)
	f("a: 1\na: 2", `error: line 2: key "a" listed twice`)
	f("? [a]\n: 1", `error: line 1: a mapping key must be a scalar`)
	f("a: [", "error: yaml: line 1: did not find expected node content")
	// An alias bomb: 9 levels of 10 aliases would be 10^9 values.
	bomb := "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 1; i < 9; i++ {
		bomb += fmt.Sprintf("a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	if _, err := Decode([]byte(bomb)); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("alias bomb: %v, want refused as too large", err)
	}
	// A very large integer is a json.Number, exact.
	v, _ := Decode([]byte(`123456789012345678901234567890`))
	if n, ok := v.(json.Number); !ok || n.String() != "123456789012345678901234567890" {
		t.Errorf("large integer decoded as %#v", v)
	}
}

const testSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["items"],
  "properties": {
    "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 2, "uniqueItems": true},
    "kind": {"enum": ["a", "b"]},
    "day": {"type": "string", "format": "date"},
    "name": {"type": "string", "minLength": 2, "maxLength": 3},
    "n": {"type": "integer", "minimum": 1, "maximum": 9},
    "tag": {"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "integer"}], "errorMessage": "is not a tag"}
  },
  "$defs": {
    "item": {"type": "string", "pattern": "^x", "errorMessage": "must start with x"}
  }
}`

func TestValidateMessages(t *testing.T) {
	s, err := Compile("test.schema.json", []byte(testSchema))
	if err != nil {
		t.Fatal(err)
	}
	f := func(yaml string, want ...string) {
		t.Helper()
		doc, err := Decode([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range s.Validate(doc) {
			got = append(got, v.String())
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", yaml, got, want)
		}
	}
	f(`{items: [x1, x2]}`)
	f(`{items: [x1, y2, 3]}`, `items[1]: "y2" must start with x`, `items[2]: 3 must start with x`)
	f(`{items: [x1]}`, `items: needs at least 2 entries`)
	f(`{items: [x1, x1]}`, `items: "x1" listed twice`)
	f(`{items: [x1, x2], extra: 1, more: 2}`, `extra: unknown field`, `more: unknown field`)
	f(`{}`, `items: required`)
	f(`[]`, `a list is not an object`)
	f(`{items: [x1, x2], kind: c}`, `kind: "c" is not one of "a", "b"`)
	f(`{items: [x1, x2], day: 2026-02-30}`, `day: "2026-02-30" is not a valid date`)
	f(`{items: [x1, x2], name: a}`, `name: "a" is shorter than 2 characters`)
	f(`{items: [x1, x2], name: abcd}`, `name: "abcd" is longer than 3 characters`)
	f(`{items: [x1, x2], n: 0}`, `n: 0 is below the minimum, 1`)
	f(`{items: [x1, x2], n: 10}`, `n: 10 is above the maximum, 9`)
	f(`{items: [x1, x2], n: 1.5}`, `n: 1.5 is not an integer`)
	f(`{items: [x1, x2], tag: A}`, `tag: "A" is not a tag`)
	f(`{items: [x1, x2], tag: 7}`)
}

func TestCompileRefusesABrokenSchema(t *testing.T) {
	if _, err := Compile("bad.json", []byte(`{"type": 5}`)); err == nil {
		t.Error("a schema with type 5 compiles")
	}
	if _, err := Compile("bad.json", []byte(`{`)); err == nil {
		t.Error("a truncated schema compiles")
	}
}
