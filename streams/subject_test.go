package streams

import (
	"strings"
	"testing"
)

func TestTopicToSubject(t *testing.T) {
	tests := []struct {
		topic, subject string
	}{
		{"devices/d1/telemetry", "iot.devices.d1.telemetry"},
		{"devices/d-1_x/events/door", "iot.devices.d-1_x.events.door"},
		{"a.b/c", "iot.a%2Eb.c"},
		{"a b/*/>", "iot.a%20b.%2A.%3E"},
		{"50%/x", "iot.50%25.x"},
		{"a//b", "iot.a.%.b"},
		{"/lead", "iot.%.lead"},
		{"trail/", "iot.trail.%"},
		{"ünï", "iot.%C3%BCn%C3%AF"},
		{"$SYS/x", "iot.%24SYS.x"},
	}
	for _, tt := range tests {
		got, err := TopicToSubject(tt.topic)
		if err != nil {
			t.Errorf("TopicToSubject(%q): %v", tt.topic, err)
			continue
		}
		if got != tt.subject {
			t.Errorf("TopicToSubject(%q) = %q, want %q", tt.topic, got, tt.subject)
		}
		back, err := SubjectToTopic(got)
		if err != nil || back != tt.topic {
			t.Errorf("SubjectToTopic(%q) = %q, %v, want %q", got, back, err, tt.topic)
		}
	}
}

func TestTopicToSubjectRejects(t *testing.T) {
	for _, topic := range []string{"", "devices/+/telemetry", "devices/#"} {
		if _, err := TopicToSubject(topic); err == nil {
			t.Errorf("TopicToSubject(%q): got no error, want one", topic)
		}
	}
	for _, subj := range []string{"", "iot", "iot.", "x.devices", "iot.a%2", "iot.a%ZZ", "iot.%41", "iot.a..b", "iot.a b"} {
		if _, err := SubjectToTopic(subj); err == nil {
			t.Errorf("SubjectToTopic(%q): got no error, want one", subj)
		}
	}
}

func TestFilterToSubject(t *testing.T) {
	tests := []struct{ filter, subject string }{
		{"devices/+/telemetry", "iot.devices.*.telemetry"},
		{"devices/#", "iot.devices.>"},
		{"#", "iot.>"},
		{"+/+", "iot.*.*"},
		{"devices/d.1/#", "iot.devices.d%2E1.>"},
	}
	for _, tt := range tests {
		got, err := FilterToSubject(tt.filter)
		if err != nil || got != tt.subject {
			t.Errorf("FilterToSubject(%q) = %q, %v, want %q", tt.filter, got, err, tt.subject)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a+/b", "a/b#"} {
		if _, err := FilterToSubject(bad); err == nil {
			t.Errorf("FilterToSubject(%q): got no error, want one", bad)
		}
	}
}

func TestMatchTopic(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"devices/+/telemetry", "devices/d1/telemetry", true},
		{"devices/+/telemetry", "devices/d1/events/x", false},
		{"devices/#", "devices", true},
		{"devices/#", "devices/d1/events/x", true},
		{"#", "anything/at/all", true},
		{"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/+", "a", false},
		{"a/+", "a/", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
	}
	for _, tt := range tests {
		if got := MatchTopic(tt.filter, tt.topic); got != tt.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

// FuzzTopicSubject checks that every topic without wildcards maps to a valid subject and back.
func FuzzTopicSubject(f *testing.F) {
	for _, s := range []string{"devices/d1/telemetry", "a//b", "a.b c/*/>", "%41", "/", "ü/€"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		subj, err := TopicToSubject(topic)
		if err != nil {
			return
		}
		for _, tok := range strings.Split(subj, ".") {
			if tok == "" || strings.ContainsAny(tok, " *>\t\r\n") {
				t.Fatalf("TopicToSubject(%q) = %q: bad token %q", topic, subj, tok)
			}
		}
		back, err := SubjectToTopic(subj)
		if err != nil || back != topic {
			t.Fatalf("round trip %q -> %q -> %q, %v", topic, subj, back, err)
		}
		if !MatchTopic(topic, topic) && !strings.ContainsAny(topic, "+#") && !strings.HasPrefix(topic, "$") {
			t.Fatalf("MatchTopic(%q, itself) = false", topic)
		}
	})
}

// FuzzSubjectToTopic checks the inverse never panics and stays one-to-one.
func FuzzSubjectToTopic(f *testing.F) {
	for _, s := range []string{"iot.devices.d1.telemetry", "iot.%", "iot.%2E", "iot.%4", "iot..x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subj string) {
		topic, err := SubjectToTopic(subj)
		if err != nil {
			return
		}
		again, err := TopicToSubject(topic)
		if err != nil || again != subj {
			t.Fatalf("SubjectToTopic(%q) = %q, which maps to %q, %v", subj, topic, again, err)
		}
	})
}

func TestSubjectCovers(t *testing.T) {
	got := dedupeOverlapping([]string{"iot.devices.>", "iot.devices", "iot.devices.*.telemetry", "iot.x.>", "iot.x.>"})
	want := []string{"iot.devices.>", "iot.devices", "iot.x.>"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("dedupeOverlapping = %v, want %v", got, want)
	}
}
