package streams_test

import (
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tributary-iot/tributary/streams"
)

// Property tests of the topic ↔ subject mapping, with testing/quick over generated topics and
// filters. The alphabets are small on purpose: bytes that need escaping ('.', '%', '*', '>',
// ' ', '$', non-ASCII) and the hex digits of their escapes come up often, so near-collisions
// such as "a.b" against "a%2Eb" are tried many times.

// topicGen is a topic of 1..6 levels, each 0..5 bytes, none a lone wildcard.
type topicGen string

var levelBytes = []string{"a", "b", "2", "E", "%", ".", "*", ">", " ", "$", "-", "_", "ü", "\x00", "+", "#"}

func genLevel(r *rand.Rand) string {
	var b strings.Builder
	for range r.Intn(6) {
		b.WriteString(levelBytes[r.Intn(len(levelBytes))])
	}
	if s := b.String(); s == "+" || s == "#" {
		return "x" + s // a lone '+' or '#' is a wildcard, not a topic level
	}
	return b.String()
}

func genTopic(r *rand.Rand) string {
	levels := make([]string, 1+r.Intn(6))
	for i := range levels {
		levels[i] = genLevel(r)
	}
	t := strings.Join(levels, "/")
	if t == "" {
		return "x"
	}
	return t
}

func (topicGen) Generate(r *rand.Rand, _ int) reflect.Value {
	return reflect.ValueOf(topicGen(genTopic(r)))
}

// quickCfg is a test's own configuration: a rand.Rand must not be shared by parallel tests.
func quickCfg(seed int64) *quick.Config {
	return &quick.Config{MaxCount: 20000, Rand: rand.New(rand.NewSource(seed))}
}

// Every topic maps to a valid literal NATS subject under the prefix, one token per level, and
// back to itself.
func TestPropTopicSubjectRoundTrip(t *testing.T) {
	t.Parallel()
	prop := func(g topicGen) bool {
		topic := string(g)
		subj, err := streams.TopicToSubject(topic)
		if err != nil {
			t.Logf("TopicToSubject(%q): %v", topic, err)
			return false
		}
		if !server.IsValidLiteralSubject(subj) || !strings.HasPrefix(subj, streams.SubjectPrefix+".") {
			t.Logf("TopicToSubject(%q) = %q: not a valid literal subject under %q", topic, subj, streams.SubjectPrefix)
			return false
		}
		if got, want := strings.Count(subj, "."), strings.Count(topic, "/")+1; got != want {
			t.Logf("TopicToSubject(%q) = %q: %d tokens after the prefix, want %d", topic, subj, got, want)
			return false
		}
		back, err := streams.SubjectToTopic(subj)
		if err != nil || back != topic {
			t.Logf("SubjectToTopic(TopicToSubject(%q) = %q) = %q, %v", topic, subj, back, err)
			return false
		}
		return true
	}
	if err := quick.Check(prop, quickCfg(8)); err != nil {
		t.Fatal(err)
	}
}

// Two different topics never share a subject.
func TestPropTopicSubjectInjective(t *testing.T) {
	t.Parallel()
	seen := map[string]string{} // subject → topic
	r := rand.New(rand.NewSource(9))
	for range 100000 {
		topic := genTopic(r)
		subj, err := streams.TopicToSubject(topic)
		if err != nil {
			t.Fatalf("TopicToSubject(%q): %v", topic, err)
		}
		if prev, ok := seen[subj]; ok && prev != topic {
			t.Fatalf("topics %q and %q both map to %q", prev, topic, subj)
		}
		seen[subj] = topic
	}
	if len(seen) < 10000 {
		t.Fatalf("only %d distinct topics generated: the generator is too narrow to test anything", len(seen))
	}
}

// matchCase is a filter and a topic built from the same few levels, so that they often match.
type matchCase struct{ Filter, Topic string }

func (matchCase) Generate(r *rand.Rand, _ int) reflect.Value {
	pool := []string{"a", "b", "a.b", "a%2Eb", "", " ", "*", ">", "ü", "$x"}
	pick := func() string { return pool[r.Intn(len(pool))] }
	topic := make([]string, 1+r.Intn(4))
	for i := range topic {
		topic[i] = pick()
	}
	var filter []string
	n := 1 + r.Intn(5)
	for i := range n {
		switch {
		case i == n-1 && r.Intn(4) == 0:
			filter = append(filter, "#")
		case r.Intn(3) == 0:
			filter = append(filter, "+")
		case i < len(topic) && r.Intn(2) == 0:
			filter = append(filter, topic[i]) // the topic's own level: a likely match
		default:
			filter = append(filter, pick())
		}
	}
	c := matchCase{strings.Join(filter, "/"), strings.Join(topic, "/")}
	if c.Filter == "" {
		c.Filter = "+" // an empty filter or topic is invalid, not a case
	}
	if c.Topic == "" {
		c.Topic = "a"
	}
	return reflect.ValueOf(c)
}

// A filter's subject matches a topic's subject in NATS exactly when MQTT matching says the
// filter matches the topic, with the two documented differences: MQTT's "a/#" also matches
// "a" (NATS "a.>" does not, so the hub matches that parent itself), and a filter starting with
// a wildcard does not match a topic starting with '$' in MQTT.
func TestPropFilterMatchesIffTopicMatches(t *testing.T) {
	t.Parallel()
	matched := 0
	cfg := quickCfg(10)
	prop := func(c matchCase) bool {
		fs, err := streams.FilterToSubject(c.Filter)
		if err != nil {
			t.Logf("FilterToSubject(%q): %v", c.Filter, err)
			return false
		}
		if !server.IsValidSubject(fs) {
			t.Logf("FilterToSubject(%q) = %q: not a valid NATS subject filter", c.Filter, fs)
			return false
		}
		ts, err := streams.TopicToSubject(c.Topic)
		if err != nil {
			t.Logf("TopicToSubject(%q): %v", c.Topic, err)
			return false
		}
		nats := server.SubjectsCollide(ts, fs)
		mqtt := streams.MatchTopic(c.Filter, c.Topic)
		if mqtt {
			matched++
		}
		parent, isHash := strings.CutSuffix(c.Filter, "/#")
		switch {
		case strings.HasPrefix(c.Topic, "$") && !strings.HasPrefix(c.Filter, "$"):
			if mqtt {
				t.Logf("MatchTopic(%q, %q): a '$' topic matched a filter not starting with '$'", c.Filter, c.Topic)
				return false
			}
		case isHash && streams.MatchTopic(parent, c.Topic):
			// The parent level of "x/#": MQTT matches, NATS does not.
			if !mqtt || nats {
				t.Logf("filter %q, topic %q (parent of '#'): mqtt %v, nats %v; want true, false", c.Filter, c.Topic, mqtt, nats)
				return false
			}
		default:
			if nats != mqtt {
				t.Logf("filter %q (%q), topic %q (%q): nats match %v, mqtt match %v", c.Filter, fs, c.Topic, ts, nats, mqtt)
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, cfg); err != nil {
		t.Fatal(err)
	}
	if matched < cfg.MaxCount/20 {
		t.Fatalf("only %d of %d cases matched: the generator is too narrow to test anything", matched, cfg.MaxCount)
	}
}
