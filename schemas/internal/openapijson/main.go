// Command openapijson writes schemas/openapi.json, the JSON form of schemas/openapi.yaml, for
// the client SDKs' tests (sdk/*), whose languages read JSON without a dependency. Run it with
// `go generate ./schemas`; TestOpenAPIJSONIsCurrent fails when the copy is stale.
package main

import (
	"fmt"
	"os"

	"github.com/maumeter/maumeter/schemas"
)

func main() {
	out, err := schemas.OpenAPIJSON()
	if err == nil {
		err = os.WriteFile("openapi.json", out, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapijson:", err)
		os.Exit(1)
	}
}
