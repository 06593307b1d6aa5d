package secure

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const env = "MAUMETER_SECURE_TEST_PASSWORD"
	for _, c := range []struct {
		name, env, file, want, wantErr string
		setEnv                         bool
	}{
		{name: "none", want: ""},
		{name: "env", env: "p@ss word\n", setEnv: true, want: "p@ss word\n"},
		{name: "file, newline dropped", file: write("a", "s3cret\n"), want: "s3cret"},
		{name: "file, CRLF dropped", file: write("b", "s3cret\r\n"), want: "s3cret"},
		{name: "file, inner newlines kept", file: write("c", "a\nb\n\n"), want: "a\nb\n"},
		{name: "empty file", file: write("d", "\n"), wantErr: "is empty"},
		{name: "missing file", file: filepath.Join(dir, "nope"), wantErr: "no such file"},
		{name: "both", env: "x", setEnv: true, file: write("e", "y"), wantErr: "both " + env + " and a password file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.setEnv {
				t.Setenv(env, c.env)
			}
			got, err := Secret("test password", env, c.file)
			switch {
			case c.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, ErrConfig) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") || (c.setEnv && strings.Contains(err.Error(), "="+c.env)) {
					t.Fatalf("the error shows the secret: %v", err)
				}
			case err != nil || got != c.want:
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}
