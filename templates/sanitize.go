package templates

import (
	"html"
	"html/template"
	"net/url"
	"strings"

	nethtml "golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// allowedTags is the whole signature vocabulary: enough for a name, a title,
// a line break and a link, nothing that can load a resource or run code.
var allowedTags = map[atom.Atom]bool{
	atom.P: true, atom.Br: true, atom.A: true, atom.B: true, atom.Strong: true,
	atom.I: true, atom.Em: true, atom.Span: true,
}

// SanitizeSignature turns the operator's EMAIL_SIGNATURE into HTML that is
// safe to place in every email. It works on tokens from golang.org/x/net/html,
// not on regular expressions, so the browser's view of the markup and ours
// agree:
//   - p, br, a, b, strong, i, em and span are kept, with only a style
//     attribute (and href on a, when it is an http, https or mailto URL);
//     every other attribute, event handlers included, is dropped;
//   - any other tag is escaped: it shows as text, it is not interpreted;
//   - comments and doctypes are dropped; text is re-escaped;
//   - kept tags are balanced, so an unclosed <a> or <span> cannot swallow the
//     rest of the email.
func SanitizeSignature(signature string) template.HTML {
	var b strings.Builder
	var open []atom.Atom // stack of kept, not yet closed elements
	// Normalise what the tokenizer normalises in text but not in Raw (used
	// for escaped tags), so that sanitising twice gives the same result.
	signature = strings.NewReplacer("\r\n", "\n", "\r", "\n", "\x00", "\uFFFD").Replace(signature)
	z := nethtml.NewTokenizer(strings.NewReader(signature))
	for {
		tt := z.Next()
		if tt == nethtml.ErrorToken {
			break // io.EOF: the reader is a string, no other error is possible
		}
		// Raw must be copied before Token, which lowercases names in place.
		raw := string(z.Raw())
		tok := z.Token()
		switch tt {
		case nethtml.TextToken:
			b.WriteString(html.EscapeString(tok.Data))
		case nethtml.StartTagToken, nethtml.SelfClosingTagToken:
			if !allowedTags[tok.DataAtom] {
				b.WriteString(html.EscapeString(raw))
				continue
			}
			writeStartTag(&b, tok)
			// "<a/>" opens an element in HTML (the slash is ignored on
			// non-void elements), so it is tracked like "<a>".
			if tok.DataAtom != atom.Br {
				open = append(open, tok.DataAtom)
			}
		case nethtml.EndTagToken:
			if !allowedTags[tok.DataAtom] {
				b.WriteString(html.EscapeString(raw))
				continue
			}
			if tok.DataAtom == atom.Br {
				continue // </br> means nothing useful; drop it
			}
			// Close up to the matching open element; a stray end tag
			// with no match is dropped rather than closing our layout.
			for i := len(open) - 1; i >= 0; i-- {
				if open[i] == tok.DataAtom {
					for j := len(open) - 1; j >= i; j-- {
						b.WriteString("</" + open[j].String() + ">")
					}
					open = open[:i]
					break
				}
			}
		case nethtml.CommentToken, nethtml.DoctypeToken:
			// Dropped: conditional comments are markup for Outlook.
		}
	}
	for j := len(open) - 1; j >= 0; j-- {
		b.WriteString("</" + open[j].String() + ">")
	}
	return template.HTML(b.String())
}

func writeStartTag(b *strings.Builder, tok nethtml.Token) {
	b.WriteByte('<')
	b.WriteString(tok.DataAtom.String())
	seen := map[string]bool{}
	for _, a := range tok.Attr {
		key := strings.ToLower(a.Key)
		if a.Namespace != "" || seen[key] {
			continue
		}
		var val string
		switch {
		case key == "style":
			v, ok := safeStyle(a.Val)
			if !ok {
				continue
			}
			val = v
		case key == "href" && tok.DataAtom == atom.A:
			v, ok := safeHref(a.Val)
			if !ok {
				continue
			}
			val = v
		default:
			continue // on*, src, class, id, target, ...: dropped
		}
		seen[key] = true
		b.WriteByte(' ')
		b.WriteString(key)
		b.WriteString(`="`)
		b.WriteString(html.EscapeString(val))
		b.WriteByte('"')
	}
	b.WriteByte('>')
}

// safeHref accepts absolute http, https and mailto URLs only. Relative links
// are meaningless in an email, and every other scheme (javascript:, data:,
// vbscript:, file:) is what an attacker would use.
func safeHref(v string) (string, bool) {
	v = strings.TrimSpace(v)
	for _, r := range v {
		// Browsers strip tabs and newlines inside URLs ("java\tscript:"),
		// so a URL containing any control character is refused outright.
		if r < 0x20 || r == 0x7f {
			return "", false
		}
	}
	u, err := url.Parse(v)
	if err != nil {
		return "", false
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if u.Host == "" {
			return "", false
		}
		return v, true
	case "mailto":
		return v, true
	}
	return "", false
}

// safeStyle keeps inline CSS unless it contains a construct that can fetch a
// resource or run script in some client (url(), expression(), IE behaviors,
// @import) or hides one behind CSS escapes or comments.
func safeStyle(v string) (string, bool) {
	l := strings.ToLower(v)
	for _, bad := range []string{"url(", "expression", "javascript", "vbscript", "behavior", "binding", "@import", "\\", "/*", "<", ">"} {
		if strings.Contains(l, bad) {
			return "", false
		}
	}
	return strings.TrimSpace(v), true
}

// footerLinkStyle is given to signature links the operator did not style:
// clients would otherwise paint them default blue in the muted footer.
const footerLinkStyle = "color:#4b5563;text-decoration:underline;"

// styleLinks adds footerLinkStyle to unstyled links of sanitised HTML. The
// sanitiser's output is canonical (lower-case names, quoted and escaped
// values, so no '>' inside a tag), which makes a plain scan exact.
func styleLinks(h template.HTML) template.HTML {
	s := string(h)
	var b strings.Builder
	for {
		i := strings.Index(s, "<a")
		if i < 0 || i+2 >= len(s) || (s[i+2] != '>' && s[i+2] != ' ') {
			if i < 0 {
				b.WriteString(s)
				break
			}
			b.WriteString(s[:i+2])
			s = s[i+2:]
			continue
		}
		end := strings.IndexByte(s[i:], '>') + i
		tag := s[i:end]
		b.WriteString(s[:i])
		if strings.Contains(tag, ` style="`) {
			b.WriteString(tag)
		} else {
			b.WriteString(`<a style="` + footerLinkStyle + `"` + tag[2:])
		}
		s = s[end:]
	}
	return template.HTML(b.String())
}

// signatureText renders sanitised signature HTML as plain text for the
// text/plain part: line breaks for br and p, "text (url)" for links.
func signatureText(h template.HTML) string {
	var b strings.Builder
	var href string
	var linkText strings.Builder
	inLink := false
	z := nethtml.NewTokenizer(strings.NewReader(string(h)))
	for {
		tt := z.Next()
		if tt == nethtml.ErrorToken {
			break
		}
		tok := z.Token()
		switch tt {
		case nethtml.TextToken:
			t := collapseSpace(tok.Data)
			if inLink {
				linkText.WriteString(t)
			} else {
				b.WriteString(t)
			}
		case nethtml.StartTagToken, nethtml.SelfClosingTagToken:
			switch tok.DataAtom {
			case atom.Br:
				b.WriteString("\n")
			case atom.P:
				b.WriteString("\n")
			case atom.A:
				inLink, href = true, ""
				linkText.Reset()
				for _, a := range tok.Attr {
					if a.Key == "href" {
						href = a.Val
					}
				}
			}
		case nethtml.EndTagToken:
			switch tok.DataAtom {
			case atom.P:
				b.WriteString("\n")
			case atom.A:
				if inLink {
					t := linkText.String()
					b.WriteString(t)
					target := strings.TrimPrefix(href, "mailto:")
					bare := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(target, "https://"), "http://"), "/")
					if lt := strings.TrimSpace(t); href != "" && lt != target && lt != bare {
						b.WriteString(" (" + target + ")")
					}
					inLink = false
				}
			}
		}
	}
	lines := strings.Split(b.String(), "\n")
	out := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func collapseSpace(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		if s != "" {
			return " "
		}
		return ""
	}
	out := strings.Join(f, " ")
	if strings.TrimLeft(s, " \t\n\r\f") != s {
		out = " " + out
	}
	if strings.TrimRight(s, " \t\n\r\f") != s {
		out += " "
	}
	return out
}
