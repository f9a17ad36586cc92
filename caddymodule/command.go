package caddymodule

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/llmspend/llmspend/templates"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:      "llm-spend",
		Usage:     "<command>",
		Short:     "llmspend tools: email previews",
		Long:      "Tools for the llm_spend app. Run `caddy llm-spend preview --help`.",
		CobraFunc: llmSpendCommands,
	})
}

// llmSpendCommands adds the subcommands of `caddy llm-spend`.
func llmSpendCommands(cmd *cobra.Command) {
	preview := &cobra.Command{
		Use:   "preview --out <dir> [--format html|text|both]",
		Short: "Render every email template with sample data into a folder",
		Long: `Renders each notification email (invitation, key_created, key_rotated,
soft_budget, max_budget) with sample data, without sending anything, and
writes <name>.html and/or <name>.txt into the --out folder (created if
needed). The text files start with a "Subject:" line.

Branding, subjects and template overrides come from the same environment
variables the gateway reads: EMAIL_LOGO_URL, EMAIL_SUPPORT_CONTACT,
EMAIL_SIGNATURE, EMAIL_COMPANY_NAME, EMAIL_INCLUDE_API_KEY, PROXY_BASE_URL,
EMAIL_SUBJECT_*, EMAIL_TEMPLATE_DIR. A template or subject that would fail
at startup fails here with the same error.`,
		Args: cobra.NoArgs,
		RunE: caddycmd.WrapCommandFuncForCobra(cmdPreview),
	}
	preview.Flags().StringP("out", "o", "", "folder to write the rendered emails into (required)")
	preview.Flags().StringP("format", "f", "both", "html, text or both")
	cmd.AddCommand(preview)
}

// cmdPreview is `caddy llm-spend preview`.
func cmdPreview(fl caddycmd.Flags) (int, error) {
	files, err := writePreviews(fl.String("out"), fl.String("format"), os.Getenv)
	if err != nil {
		return 1, err
	}
	printFiles(previewOut, files)
	return 0, nil
}

// previewOut receives the list of written files (a variable for tests).
var previewOut io.Writer = os.Stdout

func printFiles(w io.Writer, files []string) {
	for _, f := range files {
		fmt.Fprintln(w, f)
	}
}

// writePreviews renders every template with the renderer's sample data and
// writes the files; it returns their paths.
func writePreviews(out, format string, getenv func(string) string) ([]string, error) {
	if out == "" {
		return nil, fmt.Errorf("--out <dir> is required")
	}
	var html, text bool
	switch format {
	case "", "both":
		html, text = true, true
	case "html":
		html = true
	case "text", "txt":
		text = true
	default:
		return nil, fmt.Errorf("--format must be html, text or both, not %q", format)
	}
	r, err := templates.New(templates.SettingsFromEnv(getenv))
	if err != nil {
		return nil, fmt.Errorf("email templates: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var files []string
	write := func(name, body string) error {
		p := filepath.Join(out, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
		files = append(files, p)
		return nil
	}
	for _, name := range r.Names() {
		rendered, err := r.Preview(name, "")
		if err != nil {
			return files, fmt.Errorf("rendering %s: %w", name, err)
		}
		if html {
			if err := write(name+".html", rendered.HTML); err != nil {
				return files, err
			}
		}
		if text {
			// Same shape as templates/testdata/golden/<name>.txt.
			if err := write(name+".txt", "Subject: "+rendered.Subject+"\n\n"+rendered.Text); err != nil {
				return files, err
			}
		}
	}
	return files, nil
}
