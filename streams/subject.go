package streams

import (
	"fmt"
	"strings"
)

// SubjectPrefix is the first token of every subject that carries a topic. An application that
// wants all device telemetry subscribes to "iot.devices.*.telemetry" with nats.go.
const SubjectPrefix = "iot"

// TopicToSubject maps an MQTT-style topic ("devices/d1/telemetry") to its NATS subject
// ("iot.devices.d1.telemetry").
//
// Each topic level becomes one subject token. Bytes outside [A-Za-z0-9_-] are written as %XX
// (upper-case hex), so levels containing '.', '*', '>', spaces or '%' stay one token and the
// mapping is reversible; an empty level becomes the lone token "%". Wildcards are not allowed in
// a topic (use FilterToSubject for filters).
func TopicToSubject(topic string) (string, error) {
	if topic == "" {
		return "", fmt.Errorf("%w: empty topic", ErrInvalidTopic)
	}
	var b strings.Builder
	b.Grow(len(SubjectPrefix) + len(topic) + 8)
	b.WriteString(SubjectPrefix)
	for level := range strings.SplitSeq(topic, "/") {
		if level == "+" || level == "#" {
			return "", fmt.Errorf("%w: %q has a wildcard level", ErrInvalidTopic, topic)
		}
		b.WriteByte('.')
		writeToken(&b, level)
	}
	return b.String(), nil
}

// FilterToSubject maps an MQTT topic filter to a NATS subject filter: "+" becomes "*" and a
// trailing "#" becomes ">". MQTT's "a/#" also matches "a" itself while NATS "a.>" does not;
// callers that need the parent level too should match with MatchTopic.
func FilterToSubject(filter string) (string, error) {
	if filter == "" {
		return "", fmt.Errorf("%w: empty filter", ErrInvalidTopic)
	}
	levels := strings.Split(filter, "/")
	var b strings.Builder
	b.WriteString(SubjectPrefix)
	for i, level := range levels {
		b.WriteByte('.')
		switch level {
		case "+":
			b.WriteByte('*')
		case "#":
			if i != len(levels)-1 {
				return "", fmt.Errorf("%w: %q: '#' must be the last level", ErrInvalidTopic, filter)
			}
			b.WriteByte('>')
		default:
			if strings.ContainsAny(level, "+#") {
				return "", fmt.Errorf("%w: %q: wildcards must fill a whole level", ErrInvalidTopic, filter)
			}
			writeToken(&b, level)
		}
	}
	return b.String(), nil
}

// SubjectToTopic is the inverse of TopicToSubject.
func SubjectToTopic(subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, SubjectPrefix+".")
	if !ok || rest == "" || rest == "%" {
		return "", fmt.Errorf("%w: subject %q is not a topic under %q", ErrInvalidTopic, subject, SubjectPrefix)
	}
	var b strings.Builder
	b.Grow(len(rest))
	first := true
	for tok := range strings.SplitSeq(rest, ".") {
		if !first {
			b.WriteByte('/')
		}
		first = false
		if err := readToken(&b, tok); err != nil {
			return "", fmt.Errorf("%w: subject %q: %v", ErrInvalidTopic, subject, err)
		}
	}
	return b.String(), nil
}

// EscapeToken makes s usable as one subject token with the same escaping as topic levels.
func EscapeToken(s string) string {
	var b strings.Builder
	writeToken(&b, s)
	return b.String()
}

func plainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

const hexDigits = "0123456789ABCDEF"

func writeToken(b *strings.Builder, level string) {
	if level == "" {
		b.WriteByte('%')
		return
	}
	for i := 0; i < len(level); i++ {
		c := level[i]
		if plainByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xF])
	}
}

func readToken(b *strings.Builder, tok string) error {
	if tok == "%" {
		return nil // empty level
	}
	if tok == "" {
		return fmt.Errorf("empty token")
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if plainByte(c) {
			b.WriteByte(c)
			continue
		}
		if c != '%' || i+2 >= len(tok) {
			return fmt.Errorf("bad byte %q at %d", c, i)
		}
		hi, lo := unhex(tok[i+1]), unhex(tok[i+2])
		if hi < 0 || lo < 0 {
			return fmt.Errorf("bad escape %q", tok[i:i+3])
		}
		v := byte(hi<<4 | lo)
		if plainByte(v) {
			return fmt.Errorf("needless escape %q", tok[i:i+3]) // keeps the mapping one-to-one
		}
		b.WriteByte(v)
		i += 2
	}
	return nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// MatchTopic reports whether topic matches the MQTT filter (with '+' and '#', where "a/#" also
// matches "a"). Topics starting with '$' match only filters that start with '$' too.
func MatchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && !strings.HasPrefix(filter, "$") {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore {
			return !tmore
		}
		if !tmore {
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}

// ValidFilter reports whether filter is a well-formed MQTT topic filter.
func ValidFilter(filter string) error {
	_, err := FilterToSubject(filter)
	return err
}
