package caddymodule

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestPreviewCommand runs `caddy llm-spend preview` through its cobra
// wiring and compares the files with the templates' golden files.
func TestPreviewCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "previews")
	root := &cobra.Command{Use: "llm-spend"}
	llmSpendCommands(root)
	root.SetArgs([]string{"preview", "--out", out})
	var stdout bytes.Buffer
	previewOut = &stdout
	t.Cleanup(func() { previewOut = os.Stdout })
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) != 10 || !strings.HasSuffix(lines[0], "invitation.html") {
		t.Fatalf("listed files: %q", stdout.String())
	}
	golden := filepath.Join("..", "templates", "testdata", "golden")
	entries, err := os.ReadDir(golden)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 10 {
		t.Fatalf("%d golden files, want 10", len(entries))
	}
	for _, e := range entries {
		want, err := os.ReadFile(filepath.Join(golden, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatalf("preview did not write %s: %v", e.Name(), err)
		}
		if g, w := normaliseDates(string(got)), normaliseDates(string(want)); g != w {
			t.Errorf("%s differs from golden:\n%s", e.Name(), firstDiff(g, w))
		}
	}
}

func TestPreviewCommandFlags(t *testing.T) {
	newFlags := func(out, format string) caddycmd.Flags {
		fs := pflag.NewFlagSet("preview", pflag.ContinueOnError)
		fs.String("out", out, "")
		fs.String("format", format, "")
		return caddycmd.Flags{FlagSet: fs}
	}
	previewOut = io.Discard
	t.Cleanup(func() { previewOut = os.Stdout })
	dir := t.TempDir()
	if code, err := cmdPreview(newFlags(dir, "text")); code != 0 || err != nil {
		t.Fatalf("text: %d %v", code, err)
	}
	txt, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	html, _ := filepath.Glob(filepath.Join(dir, "*.html"))
	if len(txt) != 5 || len(html) != 0 {
		t.Fatalf("--format text wrote %v %v", txt, html)
	}
	if code, err := cmdPreview(newFlags("", "both")); code == 0 || err == nil || !strings.Contains(err.Error(), "--out") {
		t.Fatalf("missing --out: %d %v", code, err)
	}
	if code, err := cmdPreview(newFlags(dir, "pdf")); code == 0 || err == nil || !strings.Contains(err.Error(), "--format") {
		t.Fatalf("bad --format: %d %v", code, err)
	}
}

// TestPreviewCommandSettings: the environment brands the previews, and a
// setting that would fail at startup fails the command too.
func TestPreviewCommandSettings(t *testing.T) {
	dir := t.TempDir()
	files, err := writePreviews(dir, "html", env(map[string]string{
		"EMAIL_COMPANY_NAME":    "Acme",
		"PROXY_BASE_URL":        "https://llm.acme.test",
		"EMAIL_INCLUDE_API_KEY": "false",
	}))
	if err != nil || len(files) != 5 {
		t.Fatalf("%v %v", files, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "key_created.html"))
	if err != nil {
		t.Fatal(err)
	}
	mustContain(t, "key_created.html", string(b), "Acme", "https://llm.acme.test", "[Key hidden for security - retrieve from dashboard]")

	_, err = writePreviews(t.TempDir(), "both", env(map[string]string{"EMAIL_SUBJECT_INVITATION": "Hi {nope}"}))
	if err == nil || !strings.Contains(err.Error(), "EMAIL_SUBJECT_INVITATION") {
		t.Fatalf("unknown placeholder: %v", err)
	}
}
