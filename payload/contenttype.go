package payload

import "strings"

// Content types as used in the hub's message envelope.
const (
	JSON        = "application/json"         // CoAP content-format 50
	CBOR        = "application/cbor"         // 60
	SenMLJSON   = "application/senml+json"   // 110
	SenMLCBOR   = "application/senml+cbor"   // 112
	OctetStream = "application/octet-stream" // 42
	TextPlain   = "text/plain"               // 0
)

// coapFormats lists the CoAP content-formats the hub understands
// (IANA "CoAP Content-Formats" registry).
var coapFormats = [...]struct {
	cf int
	ct string
}{
	{0, TextPlain},
	{42, OctetStream},
	{50, JSON},
	{60, CBOR},
	{110, SenMLJSON},
	{112, SenMLCBOR},
}

// ContentTypeFromCoAP maps a CoAP content-format number to a content type
// ("", false if unknown).
func ContentTypeFromCoAP(cf int) (string, bool) {
	for _, f := range coapFormats {
		if f.cf == cf {
			return f.ct, true
		}
	}
	return "", false
}

// CoAPFormat maps a content type to its CoAP content-format number (ok false
// if none). Parameters and case are ignored: "text/plain; charset=utf-8"
// maps to 0 and "Application/JSON" to 50.
func CoAPFormat(contentType string) (int, bool) {
	ct := mediaType(contentType)
	for _, f := range coapFormats {
		if f.ct == ct {
			return f.cf, true
		}
	}
	return 0, false
}

// mediaType returns the media type of a content type without parameters, in
// lower case. It does not allocate for the usual, already normalized input.
func mediaType(contentType string) string {
	ct := contentType
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	return strings.ToLower(ct)
}

// normalType is mediaType with a shortcut for the constants of this package.
func normalType(contentType string) string {
	switch contentType {
	case "", JSON, CBOR, SenMLJSON, SenMLCBOR, OctetStream, TextPlain:
		return contentType
	}
	return mediaType(contentType)
}
