package tsdb

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"", time.Time{}},
		{"now", now},
		{"-1h", now.Add(-time.Hour)},
		{"-30m", now.Add(-30 * time.Minute)},
		{"now-2h", now.Add(-2 * time.Hour)},
		{"+5m", now.Add(5 * time.Minute)},
		{"-7d", now.Add(-7 * 24 * time.Hour)},
		{"-1w", now.Add(-7 * 24 * time.Hour)},
		{"-1d12h", now.Add(-36 * time.Hour)},
		{"-1.5h", now.Add(-90 * time.Minute)},
		{"2024-05-01T10:00:00Z", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)},
		{"2024-05-01T12:00:00.5+02:00", time.Date(2024, 5, 1, 10, 0, 0, 5e8, time.UTC)},
		{"1714564800000", time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)},
		{"0", time.Unix(0, 0).UTC()},
	} {
		got, err := ParseTime(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"yesterday", "-1x", "-", "now-", "2024-05-01", "1h", "-h", "99999999999999999999", "--1h"} {
		if got, err := ParseTime(in, now); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", in, got)
		}
	}
}

func TestParseDurationAndAgg(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "30s": 30 * time.Second, "1d": 24 * time.Hour, "2w": 14 * 24 * time.Hour, "0.5d": 12 * time.Hour, "1h30m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1h", "1", "1y", "d", "1..5d"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, got)
		}
	}
	for _, in := range []string{"", "mean", "MAX", " last "} {
		if _, err := ParseAgg(in); err != nil {
			t.Errorf("ParseAgg(%q): %v", in, err)
		}
	}
	if _, err := ParseAgg("median"); !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), "agg") {
		t.Errorf("ParseAgg(median) = %v, want ErrBadQuery naming agg", err)
	}
}

func TestParseQueryDefaultsAndErrors(t *testing.T) {
	q, err := ParseQuery("d1", url.Values{"field": {"temp"}, "every": {"5m"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := Query{Device: "d1", Field: "temp", From: now.Add(-time.Hour), To: now, Every: 5 * time.Minute, Agg: "mean"}
	if q != want {
		t.Errorf("got %+v, want %+v", q, want)
	}
	if q, _ := ParseQuery("d1", url.Values{"field": {"time"}}, now); q.Field != "time_" {
		t.Errorf("got field %q for time, want time_", q.Field)
	}
	for _, tc := range []struct {
		device string
		v      url.Values
		names  string
	}{
		{"d1", url.Values{}, "field"},
		{"bad id", url.Values{"field": {"x"}}, "device"},
		{"d1", url.Values{"field": {"x"}, "from": {"soon"}}, "from"},
		{"d1", url.Values{"field": {"x"}, "to": {"later"}}, "to"},
		{"d1", url.Values{"field": {"x"}, "from": {"-1h"}, "to": {"-2h"}}, "from"},
		{"d1", url.Values{"field": {"x"}, "every": {"fast"}}, "every"},
		{"d1", url.Values{"field": {"x"}, "agg": {"avg"}}, "agg"},
		{"d1", url.Values{"field": {"x"}, "from": {"-30d"}, "every": {"1s"}}, "every"},
	} {
		_, err := ParseQuery(tc.device, tc.v, now)
		if !errors.Is(err, ErrBadQuery) || !strings.Contains(err.Error(), tc.names) {
			t.Errorf("ParseQuery(%q, %v) = %v, want ErrBadQuery naming %s", tc.device, tc.v, err, tc.names)
		}
	}
}

func TestWindowStartIsEpochAligned(t *testing.T) {
	for _, tc := range []struct {
		t     time.Time
		every time.Duration
		want  time.Time
	}{
		{time.Date(2024, 1, 1, 0, 7, 13, 0, time.UTC), 10 * time.Minute, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)},
		{time.Date(2024, 1, 1, 0, 10, 0, 0, time.UTC), 10 * time.Minute, time.Date(2024, 1, 1, 0, 10, 0, 0, time.UTC)},
		{time.Unix(100, 0), 17 * time.Second, time.Unix(85, 0)},
		{time.Unix(-1, 0), time.Minute, time.Unix(-60, 0)},
		{time.Unix(-60, 0), time.Minute, time.Unix(-60, 0)},
	} {
		if got := windowStart(tc.t, tc.every); !got.Equal(tc.want) {
			t.Errorf("windowStart(%v, %v) = %v, want %v", tc.t, tc.every, got, tc.want)
		}
	}
}

func TestAnswer(t *testing.T) {
	at := func(s int) int64 { return time.Unix(int64(s), 0).UnixNano() }
	vals := func() []value {
		return []value{{at(65), 2, 4.0}, {at(5), 1, 1.0}, {at(30), 3, 3.0}, {at(5), 4, 2.0}, {at(130), 5, 10.0}}
	}
	q := Query{Field: "f", From: time.Unix(0, 0).UTC(), To: time.Unix(180, 0).UTC(), Every: time.Minute}
	for agg, want := range map[string][]any{
		"mean":  {2.5, 4.0, 10.0}, // the later message at 5 s wins: 2, 3
		"sum":   {5.0, 4.0, 10.0},
		"min":   {2.0, 4.0, 10.0},
		"max":   {3.0, 4.0, 10.0},
		"count": {int64(2), int64(1), int64(1)},
		"first": {2.0, 4.0, 10.0},
		"last":  {3.0, 4.0, 10.0},
	} {
		q.Agg = agg
		got, err := answer(q, vals())
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || !got[0].Time.Equal(time.Unix(0, 0)) || !got[1].Time.Equal(time.Unix(60, 0)) || !got[2].Time.Equal(time.Unix(120, 0)) {
			t.Fatalf("%s: got %v, want windows at 0, 60, 120 s", agg, got)
		}
		for i := range want {
			if got[i].Value != want[i] {
				t.Errorf("%s: window %d: got %v, want %v", agg, i, got[i].Value, want[i])
			}
		}
	}
	q.Every, q.Agg = 0, ""
	if got, _ := answer(q, vals()); len(got) != 4 || got[0].Value != 2.0 {
		t.Errorf("raw: got %v, want 4 points starting with 2", got)
	}
	q.Agg = "count"
	if got, _ := answer(q, vals()); len(got) != 1 || got[0].Value != int64(4) || !got[0].Time.Equal(q.From) {
		t.Errorf("whole range count: got %v, want 4 at from", got)
	}
	q.Agg = "max"
	if _, err := answer(q, []value{{1, 1, "x"}}); !errors.Is(err, ErrFieldType) {
		t.Errorf("max of strings: got %v, want ErrFieldType", err)
	}
}

func TestFluxString(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:      `"plain"`,
		`a"b\c`:      `"a\"b\\c"`,
		"x${y}":      `"x$" + "{y}"`,
		"$5":         `"$5"`,
		"tab\tnl\n":  `"tab\tnl\n"`,
		"db/autogen": `"db/autogen"`,
	} {
		if got := fluxString(in); got != want {
			t.Errorf("fluxString(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"now", "-1h", "2024-05-01T10:00:00Z", "1714564800000", "-1.5d", "now+3w2d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTime(s, now)
		if err == nil && s != "" && got.Location() != time.UTC {
			t.Errorf("ParseTime(%q) = %v", s, got)
		}
		if d, err := ParseDuration(s); err == nil && d < 0 {
			t.Errorf("ParseDuration(%q) = %v, want not negative", s, d)
		}
	})
}
