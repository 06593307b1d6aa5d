package maumeter

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestTypesMatchOpenAPI checks the SDK's wire types against schemas/openapi.json (the JSON form
// of schemas/openapi.yaml): every field the SDK sends or reads is in the schema, every required
// field is sent, and the enums of event types and rejection reasons are the SDK's.
func TestTypesMatchOpenAPI(t *testing.T) {
	data, err := os.ReadFile("../../schemas/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Required   []string                   `json:"required"`
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		schema string
		typ    any
		sends  bool // the SDK sends this type: it must carry every required field
	}{
		{"Event", wireEvent{}, true},
		{"IngestResponse", ingestResponse{}, false},
		{"Rejection", rejection{}, false},
		{"LimitError", errorBody{}, false},
	} {
		s, ok := doc.Components.Schemas[tc.schema]
		if !ok {
			t.Fatalf("schema %s missing", tc.schema)
		}
		fields := map[string]bool{}
		rt := reflect.TypeOf(tc.typ)
		for i := 0; i < rt.NumField(); i++ {
			name, opts, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			fields[name] = true
			if _, ok := s.Properties[name]; !ok {
				t.Errorf("%s.%s is not in schemas/openapi.yaml %s", rt.Name(), name, tc.schema)
			}
			if tc.sends && opts == "omitempty" && slices.Contains(s.Required, name) {
				t.Errorf("%s.%s is required by %s but omitted when empty", rt.Name(), name, tc.schema)
			}
		}
		for _, r := range s.Required {
			if !fields[r] {
				t.Errorf("%s requires %s, which %s lacks", tc.schema, r, rt.Name())
			}
		}
		if tc.sends {
			for name := range s.Properties {
				if !fields[name] {
					t.Errorf("%s has %s, which the SDK never sends", tc.schema, name)
				}
			}
		}
	}
	enum := func(schema, prop string) []string {
		var p struct {
			Enum []string `json:"enum"`
		}
		if err := json.Unmarshal(doc.Components.Schemas[schema].Properties[prop], &p); err != nil {
			t.Fatal(err)
		}
		return p.Enum
	}
	if got, want := []string{string(Search), string(PreDownload), string(Open)}, enum("Event", "event"); !slices.Equal(got, want) {
		t.Errorf("event types %v, schema %v", got, want)
	}
	if got := enum("Rejection", "reason"); !slices.Equal(Reasons, got) {
		t.Errorf("Reasons %v, schema %v", Reasons, got)
	}
}
