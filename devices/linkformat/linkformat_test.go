package linkformat

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want []Link
	}{
		{"", nil},
		{"  ", nil},
		{"</a>", []Link{{Target: "/a"}}},
		{`</sensors/temp>;rt="temperature-c";if=sensor;obs`, []Link{{Target: "/sensors/temp", Params: []Param{{Name: "rt", Value: "temperature-c"}, {Name: "if", Value: "sensor"}, {Name: "obs", NoValue: true}}}}},
		{"</a>,\n </b> ; ct = 40", []Link{{Target: "/a"}, {Target: "/b", Params: []Param{{Name: "ct", Value: "40"}}}}},
		{`<coap://[2001:db8::1]:5683/x>;title="a \"quoted\" \\ title";RT="Up"`, []Link{{Target: "coap://[2001:db8::1]:5683/x", Params: []Param{{Name: "title", Value: `a "quoted" \ title`}, {Name: "rt", Value: "Up"}}}}},
		{`</a>;rt="x y"`, []Link{{Target: "/a", Params: []Param{{Name: "rt", Value: "x y"}}}}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for in, says := range map[string]string{
		"/a":             "starts with '<'",
		"<a":             "without '>'",
		"</a> </b>":      "want ','",
		"</a>,":          "starts with '<'",
		`</a>;rt="x`:     "unterminated",
		"</a>;=x":        "parameter name",
		"</a>;rt=":       "value missing",
		"</a>;rt=,</b>":  "want a value",
		"</a b>":         "not allowed",
		`</a>;rt="x\`:    "unterminated",
		"</a>;r t=x":     "want ','",
		"</a>;rt=\"x\"y": "want ','",
	} {
		_, err := Parse(in)
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), says) {
			t.Errorf("Parse(%q) error %v; want ErrSyntax mentioning %q", in, err, says)
		}
	}
	many := strings.Repeat("</a>,", MaxLinks) + "</a>"
	if _, err := Parse(many); err == nil {
		t.Errorf("%d links accepted", MaxLinks+1)
	}
}

func TestFormatRoundTrip(t *testing.T) {
	in := `</sensors/temp>;rt="temperature-c";if="sensor";obs,</q>;title="say \"hi\""`
	links, err := Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := Format(links); got != in {
		t.Errorf("Format = %s; want %s", got, in)
	}
}

func TestFilterMatch(t *testing.T) {
	l := Link{Target: "/sensors/temp", Params: []Param{{Name: "rt", Value: "temperature-c core.s"}, {Name: "obs", NoValue: true}}}
	tests := []struct {
		f    string
		want bool
	}{
		{"rt=temperature-c", true},
		{"rt=core.s", true},
		{"rt=temp*", true},
		{"rt=temperature", false},
		{"href=/sensors/*", true},
		{"href=/sensors", false},
		{"if=sensor", false},
		{"obs=", true},
		{"rt=*", true},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.f)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(l); got != tt.want {
			t.Errorf("%s matches %v: %v, want %v", tt.f, l, got, tt.want)
		}
	}
	if _, err := ParseFilter("=x"); err == nil {
		t.Error("ParseFilter(=x) accepted")
	}
}

// FuzzParse: the parser never panics, and what it accepts survives a Format/Parse round trip.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "</a>", `</a>;rt="x";obs,</b>;ct=40`, `<coap://h/x>;title="\"q\""`, "</a>;rt=", `</a>;x="\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		links, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(Format(links))
		if err != nil {
			t.Fatalf("Format(%q) = %q does not parse: %v", s, Format(links), err)
		}
		if len(again) != len(links) {
			t.Fatalf("round trip of %q: %d links, then %d", s, len(links), len(again))
		}
		for i := range links {
			if again[i].Target != links[i].Target || len(again[i].Params) != len(links[i].Params) {
				t.Fatalf("round trip of %q: %+v became %+v", s, links[i], again[i])
			}
		}
	})
}
