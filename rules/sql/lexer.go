package sql

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

type tokKind uint8

const (
	tEOF      tokKind = iota
	tIdent            // name; val is the name
	tQIdent           // "quoted" or `quoted` name; val is the unquoted name
	tKeyword          // reserved word; val is upper case
	tNumber           // val is the text, num the value
	tDuration         // val is the text, dur the value
	tString           // 'text'; val is the unquoted text
	tOp               // punctuation; val is the operator, normalised (<> is !=, == is =)
)

type token struct {
	kind tokKind
	pos  int
	val  string
	num  float64
	dur  time.Duration
}

// keywords are reserved: they cannot be identifiers unless quoted.
var keywords = map[string]bool{
	"SELECT": true, "FROM": true, "WHERE": true, "GROUP": true, "BY": true, "HAVING": true,
	"AS": true, "AND": true, "OR": true, "NOT": true, "IN": true, "IS": true,
	"NULL": true, "TRUE": true, "FALSE": true,
}

// describe names a token in error messages.
func (t token) describe() string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tString:
		s := t.val
		if utf8.RuneCountInString(s) > 20 {
			s = string([]rune(s)[:20]) + "..."
		}
		return "string '" + strings.ReplaceAll(s, "'", "''") + "'"
	case tQIdent:
		return strconv.Quote(t.val)
	}
	return "'" + t.val + "'"
}

func (t token) is(kind tokKind, val string) bool { return t.kind == kind && t.val == val }

type lexer struct {
	src  string
	pos  int
	toks []token
}

// lex splits src into tokens, ending with tEOF.
func lex(src string) ([]token, error) {
	l := &lexer{src: src}
	for {
		t, err := l.next()
		if err != nil {
			return nil, err
		}
		l.toks = append(l.toks, t)
		if t.kind == tEOF {
			return l.toks, nil
		}
	}
}

func (l *lexer) errorf(pos int, format string, args ...any) error {
	return errorAt(l.src, pos, format, args...)
}

func isIdentStart(r rune) bool { return r == '_' || unicode.IsLetter(r) }
func isIdentPart(r rune) bool  { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }

func (l *lexer) next() (token, error) {
	if err := l.skipSpace(); err != nil {
		return token{}, err
	}
	start := l.pos
	if l.pos >= len(l.src) {
		return token{kind: tEOF, pos: start}, nil
	}
	c := l.src[l.pos]
	switch {
	case isDigit(c) || (c == '.' && l.pos+1 < len(l.src) && isDigit(l.src[l.pos+1])):
		return l.number()
	case c == '\'':
		s, err := l.quoted('\'', "string")
		return token{kind: tString, pos: start, val: s}, err
	case c == '"' || c == '`':
		s, err := l.quoted(c, "quoted identifier")
		if err == nil && s == "" {
			err = l.errorf(start, "empty quoted identifier")
		}
		return token{kind: tQIdent, pos: start, val: s}, err
	}
	r, size := utf8.DecodeRuneInString(l.src[l.pos:])
	if isIdentStart(r) {
		for l.pos < len(l.src) {
			r, size := utf8.DecodeRuneInString(l.src[l.pos:])
			if !isIdentPart(r) {
				break
			}
			l.pos += size
		}
		word := l.src[start:l.pos]
		if up := strings.ToUpper(word); len(up) == len(word) && keywords[up] {
			return token{kind: tKeyword, pos: start, val: up}, nil
		}
		return token{kind: tIdent, pos: start, val: word}, nil
	}
	for _, op := range []string{"<=", ">=", "<>", "!=", "==", ",", ".", "(", ")", "*", "+", "-", "/", "%", "=", "<", ">", ";"} {
		if strings.HasPrefix(l.src[l.pos:], op) {
			l.pos += len(op)
			switch op {
			case "<>":
				op = "!="
			case "==":
				op = "="
			}
			return token{kind: tOp, pos: start, val: op}, nil
		}
	}
	if r == utf8.RuneError && size <= 1 {
		return token{}, l.errorf(start, "invalid UTF-8 in query")
	}
	return token{}, l.errorf(start, "unexpected character %q", r)
}

// skipSpace skips white space and comments: -- to the end of the line, and
// /* ... */.
func (l *lexer) skipSpace() error {
	for l.pos < len(l.src) {
		switch c := l.src[l.pos]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			l.pos++
		case strings.HasPrefix(l.src[l.pos:], "--"):
			if i := strings.IndexByte(l.src[l.pos:], '\n'); i >= 0 {
				l.pos += i + 1
			} else {
				l.pos = len(l.src)
			}
		case strings.HasPrefix(l.src[l.pos:], "/*"):
			i := strings.Index(l.src[l.pos+2:], "*/")
			if i < 0 {
				return l.errorf(l.pos, "unterminated comment")
			}
			l.pos += i + 4
		default:
			return nil
		}
	}
	return nil
}

// quoted reads text between quote characters; a doubled quote is one quote.
func (l *lexer) quoted(q byte, what string) (string, error) {
	start := l.pos
	l.pos++
	var b strings.Builder
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		if c == q {
			if l.pos+1 < len(l.src) && l.src[l.pos+1] == q {
				b.WriteByte(q)
				l.pos += 2
				continue
			}
			l.pos++
			s := b.String()
			if !utf8.ValidString(s) {
				return "", l.errorf(start, "invalid UTF-8 in %s", what)
			}
			return s, nil
		}
		b.WriteByte(c)
		l.pos++
	}
	return "", l.errorf(start, "unterminated %s: missing closing %c", what, q)
}

// durationUnits are the units of duration literals such as 1m or 1h30m.
var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond, "us": time.Microsecond, "µs": time.Microsecond, "ms": time.Millisecond,
	"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour,
}

// number reads a number, or a duration when letters follow the digits.
func (l *lexer) number() (token, error) {
	start := l.pos
	f, err := l.scanFloat()
	if err != nil {
		return token{}, err
	}
	if !l.atLetter() {
		return token{kind: tNumber, pos: start, val: l.src[start:l.pos], num: f}, nil
	}
	// A duration: one or more number+unit parts, e.g. 1h30m.
	var total float64
	for {
		unitStart := l.pos
		for l.atLetter() {
			_, size := utf8.DecodeRuneInString(l.src[l.pos:])
			l.pos += size
		}
		unit, ok := durationUnits[l.src[unitStart:l.pos]]
		if !ok {
			return token{}, l.errorf(unitStart, "unknown duration unit %q in %q: use ns, us, ms, s, m, h or d",
				l.src[unitStart:l.pos], l.src[start:l.pos])
		}
		total += f * float64(unit)
		if l.pos >= len(l.src) || !(isDigit(l.src[l.pos]) || l.src[l.pos] == '.') {
			break
		}
		partStart := l.pos
		if f, err = l.scanFloat(); err != nil {
			return token{}, err
		}
		if !l.atLetter() {
			return token{}, l.errorf(partStart, "missing unit after %q in duration %q", l.src[partStart:l.pos], l.src[start:l.pos])
		}
	}
	if total >= math.MaxInt64 || math.IsNaN(total) {
		return token{}, l.errorf(start, "duration %q out of range", l.src[start:l.pos])
	}
	return token{kind: tDuration, pos: start, val: l.src[start:l.pos], dur: time.Duration(math.Round(total))}, nil
}

func (l *lexer) atLetter() bool {
	if l.pos >= len(l.src) {
		return false
	}
	r, _ := utf8.DecodeRuneInString(l.src[l.pos:])
	return isIdentStart(r)
}

// scanFloat reads digits [. digits] [e [+-] digits].
func (l *lexer) scanFloat() (float64, error) {
	start := l.pos
	for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
		l.pos++
	}
	if l.pos < len(l.src) && l.src[l.pos] == '.' {
		l.pos++
		for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
			l.pos++
		}
	}
	if l.pos < len(l.src) && (l.src[l.pos] == 'e' || l.src[l.pos] == 'E') {
		i := l.pos + 1
		if i < len(l.src) && (l.src[i] == '+' || l.src[i] == '-') {
			i++
		}
		if i < len(l.src) && isDigit(l.src[i]) {
			l.pos = i
			for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
				l.pos++
			}
		}
	}
	f, err := strconv.ParseFloat(l.src[start:l.pos], 64)
	if err != nil {
		return 0, l.errorf(start, "invalid number %q", l.src[start:l.pos])
	}
	return f, nil
}
