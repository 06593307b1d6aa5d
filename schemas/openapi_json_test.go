package schemas

import (
	"bytes"
	"os"
	"testing"
)

// TestOpenAPIJSONIsCurrent fails when schemas/openapi.json, which the SDKs' tests read, is not
// the JSON form of schemas/openapi.yaml (run `go generate ./schemas`).
func TestOpenAPIJSONIsCurrent(t *testing.T) {
	want, err := OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("schemas/openapi.json is stale: run `go generate ./schemas`")
	}
}
