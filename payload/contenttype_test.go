package payload

import "testing"

func TestCoAPContentFormats(t *testing.T) {
	for _, tc := range []struct {
		cf int
		ct string
	}{
		{0, TextPlain},
		{42, OctetStream},
		{50, JSON},
		{60, CBOR},
		{110, SenMLJSON},
		{112, SenMLCBOR},
	} {
		ct, ok := ContentTypeFromCoAP(tc.cf)
		if !ok || ct != tc.ct {
			t.Errorf("ContentTypeFromCoAP(%d): got %q, %v, want %q, true", tc.cf, ct, ok, tc.ct)
		}
		cf, ok := CoAPFormat(tc.ct)
		if !ok || cf != tc.cf {
			t.Errorf("CoAPFormat(%q): got %d, %v, want %d, true", tc.ct, cf, ok, tc.cf)
		}
	}
}

func TestCoAPContentFormatsUnknown(t *testing.T) {
	for _, cf := range []int{-1, 1, 11050, 11060, 65535} {
		if ct, ok := ContentTypeFromCoAP(cf); ok || ct != "" {
			t.Errorf("ContentTypeFromCoAP(%d): got %q, %v, want \"\", false", cf, ct, ok)
		}
	}
	for _, ct := range []string{"", "application/xml", "application/senml-exi", "json"} {
		if cf, ok := CoAPFormat(ct); ok || cf != 0 {
			t.Errorf("CoAPFormat(%q): got %d, %v, want 0, false", ct, cf, ok)
		}
	}
}

func TestCoAPFormatParameters(t *testing.T) {
	for ct, want := range map[string]int{
		"text/plain; charset=utf-8":      0,
		"Application/JSON":               50,
		" application/cbor ":             60,
		"application/senml+json;foo=bar": 110,
		"APPLICATION/SENML+CBOR ; x=y":   112,
		"application/octet-stream;q=0.5": 42,
	} {
		if cf, ok := CoAPFormat(ct); !ok || cf != want {
			t.Errorf("CoAPFormat(%q): got %d, %v, want %d, true", ct, cf, ok, want)
		}
	}
}
