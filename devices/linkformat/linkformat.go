// Package linkformat parses and writes CoRE Link Format (RFC 6690, content-format 40), the
// payload of /.well-known/core and of CoRE Resource Directory registrations (RFC 9176), and
// matches links against RFC 6690 §4.1 query filters. It is pure: no I/O, no internal imports.
package linkformat

import (
	"errors"
	"fmt"
	"strings"
)

// Limits on what Parse accepts.
const (
	MaxLinks  = 1024
	MaxParams = 64
)

// Link is one link-value: a target URI reference and its parameters in order.
type Link struct {
	Target string  `json:"href"`
	Params []Param `json:"params,omitempty"`
}

// Param is one link parameter. A parameter without a value (";obs") has Value "" and NoValue.
type Param struct {
	Name    string `json:"name"`
	Value   string `json:"value,omitempty"`
	NoValue bool   `json:"flag,omitempty"`
}

// ErrSyntax wraps every parse error.
var ErrSyntax = errors.New("malformed link-format")

func syntaxErr(pos int, format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", ErrSyntax, pos, fmt.Sprintf(format, args...))
}

// Parse reads a link-format document. An empty (or all white space) document is an empty
// list. White space is allowed around ',' and ';' and '='.
func Parse(s string) ([]Link, error) {
	p := parser{s: s}
	var links []Link
	p.space()
	if p.eof() {
		return nil, nil
	}
	for {
		l, err := p.link()
		if err != nil {
			return nil, err
		}
		links = append(links, l)
		if len(links) > MaxLinks {
			return nil, syntaxErr(p.i, "more than %d links", MaxLinks)
		}
		p.space()
		if p.eof() {
			return links, nil
		}
		if p.s[p.i] != ',' {
			return nil, syntaxErr(p.i, "want ',' between links, got %q", p.s[p.i])
		}
		p.i++
		p.space()
	}
}

type parser struct {
	s string
	i int
}

func (p *parser) eof() bool { return p.i >= len(p.s) }

func (p *parser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\r' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *parser) link() (Link, error) {
	if p.eof() || p.s[p.i] != '<' {
		return Link{}, syntaxErr(p.i, "a link starts with '<'")
	}
	end := strings.IndexByte(p.s[p.i+1:], '>')
	if end < 0 {
		return Link{}, syntaxErr(p.i, "'<' without '>'")
	}
	target := p.s[p.i+1 : p.i+1+end]
	for j := 0; j < len(target); j++ {
		if c := target[j]; c <= ' ' || c == '"' || c == '<' || c == 0x7f {
			return Link{}, syntaxErr(p.i+1+j, "character %q is not allowed in a URI reference", c)
		}
	}
	l := Link{Target: target}
	p.i += end + 2
	for {
		p.space()
		if p.eof() || p.s[p.i] != ';' {
			return l, nil
		}
		p.i++
		p.space()
		prm, err := p.param()
		if err != nil {
			return Link{}, err
		}
		l.Params = append(l.Params, prm)
		if len(l.Params) > MaxParams {
			return Link{}, syntaxErr(p.i, "more than %d parameters on one link", MaxParams)
		}
	}
}

// isParmChar: parmname = 1*( ALPHA / DIGIT / "!" / "#" / "$" / "&" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" )
func isParmChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$&+-.^_`|~*", c) >= 0
}

// isPtokenChar: ptokenchar of RFC 5988 (roughly: printable, no separators).
func isPtokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && strings.IndexByte(`",;<>\`, c) < 0
}

func (p *parser) param() (Param, error) {
	start := p.i
	for p.i < len(p.s) && isParmChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return Param{}, syntaxErr(p.i, "want a parameter name after ';'")
	}
	prm := Param{Name: strings.ToLower(p.s[start:p.i])}
	p.space()
	if p.eof() || p.s[p.i] != '=' {
		prm.NoValue = true
		return prm, nil
	}
	p.i++
	p.space()
	if p.eof() {
		return Param{}, syntaxErr(p.i, "parameter %s: value missing after '='", prm.Name)
	}
	if p.s[p.i] == '"' {
		var b strings.Builder
		p.i++
		for {
			if p.eof() {
				return Param{}, syntaxErr(p.i, "parameter %s: unterminated quoted string", prm.Name)
			}
			c := p.s[p.i]
			if c == '"' {
				p.i++
				break
			}
			if c == '\\' {
				p.i++
				if p.eof() {
					return Param{}, syntaxErr(p.i, "parameter %s: unterminated quoted string", prm.Name)
				}
				c = p.s[p.i]
			}
			b.WriteByte(c)
			p.i++
		}
		prm.Value = b.String()
		return prm, nil
	}
	vs := p.i
	for p.i < len(p.s) && isPtokenChar(p.s[p.i]) {
		p.i++
	}
	if p.i == vs {
		return Param{}, syntaxErr(p.i, "parameter %s: want a value after '='", prm.Name)
	}
	prm.Value = p.s[vs:p.i]
	return prm, nil
}

// Values returns every value of parameter name, splitting space-separated lists (rt, if, ct
// and rel hold several values that way). A flag parameter yields "".
func (l Link) Values(name string) []string {
	var out []string
	for _, p := range l.Params {
		if p.Name != name {
			continue
		}
		if p.NoValue {
			out = append(out, "")
			continue
		}
		fs := strings.Fields(p.Value)
		if len(fs) == 0 {
			out = append(out, "")
		}
		out = append(out, fs...)
	}
	return out
}

// Get returns the first value of parameter name.
func (l Link) Get(name string) (string, bool) {
	for _, p := range l.Params {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

// Set replaces (or adds) parameter name.
func (l *Link) Set(name, value string) {
	for i, p := range l.Params {
		if p.Name == name {
			l.Params[i] = Param{Name: name, Value: value}
			return
		}
	}
	l.Params = append(l.Params, Param{Name: name, Value: value})
}

// String writes one link-value; values are quoted (escaping '"' and '\').
func (l Link) String() string {
	var b strings.Builder
	writeLink(&b, l)
	return b.String()
}

var quoter = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

func writeLink(b *strings.Builder, l Link) {
	b.WriteByte('<')
	b.WriteString(l.Target)
	b.WriteByte('>')
	for _, p := range l.Params {
		b.WriteByte(';')
		b.WriteString(p.Name)
		if p.NoValue {
			continue
		}
		b.WriteString(`="`)
		b.WriteString(quoter.Replace(p.Value))
		b.WriteByte('"')
	}
}

// Format writes links as a link-format document.
func Format(links []Link) string {
	var b strings.Builder
	for i, l := range links {
		if i > 0 {
			b.WriteByte(',')
		}
		writeLink(&b, l)
	}
	return b.String()
}

// Filter is one query filter (RFC 6690 §4.1): name=value, where a value ending in '*'
// matches by prefix. Name "href" matches the target.
type Filter struct {
	Name, Value string
}

// ParseFilter reads "name=value" (a query parameter).
func ParseFilter(q string) (Filter, error) {
	k, v, _ := strings.Cut(q, "=")
	if k == "" {
		return Filter{}, fmt.Errorf("filter %q: want name=value", q)
	}
	for i := 0; i < len(k); i++ {
		if !isParmChar(k[i]) {
			return Filter{}, fmt.Errorf("filter %q: %q is not a parameter name", q, k)
		}
	}
	return Filter{Name: strings.ToLower(k), Value: v}, nil
}

// MatchValue compares one value with a filter value (prefix match when it ends in '*').
func MatchValue(pattern, v string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(v, p)
	}
	return pattern == v
}

// Match reports whether l satisfies f: its target (for "href") or any value of the parameter.
func (f Filter) Match(l Link) bool {
	if f.Name == "href" {
		return MatchValue(f.Value, l.Target)
	}
	for _, v := range l.Values(f.Name) {
		if MatchValue(f.Value, v) {
			return true
		}
	}
	return false
}
