package payload

import "testing"

// A typical flat telemetry object, 100-odd bytes.
const benchJSONObject = `{"temperature":21.5,"humidity":40.2,"pressure":1013.2,"door":false,"fw":"1.2.3","ts":1700000000000}`

// A SenML JSON pack of the same fields.
const benchSenMLJSON = `[{"bn":"urn:dev:ow:10e2073a01080063:","bt":1.7e9,"n":"temperature","u":"Cel","v":21.5},` +
	`{"n":"humidity","u":"%RH","v":40.2},{"n":"pressure","u":"hPa","v":1013.2},` +
	`{"n":"door","vb":false},{"n":"fw","vs":"1.2.3"}]`

// The object of benchJSONObject as a CBOR map.
var benchCBORMap = cb(
	"a6",
	"6b", raw("temperature"), "fb 40 35 80 00 00 00 00 00",
	"68", raw("humidity"), "fb 40 44 19 99 99 99 99 9a",
	"68", raw("pressure"), "fb 40 8f a9 99 99 99 99 9a",
	"64", raw("door"), "f4",
	"62", raw("fw"), "65", raw("1.2.3"),
	"62", raw("ts"), "1b 00 00 01 8b cf e5 68 00",
)

func benchmarkTelemetry(b *testing.B, ct string, body []byte) {
	if _, err := DecodeTelemetry(ct, body); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeTelemetry(ct, body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeTelemetry(b *testing.B) {
	b.Run("json-object", func(b *testing.B) { benchmarkTelemetry(b, JSON, []byte(benchJSONObject)) })
	b.Run("json-object-sniffed", func(b *testing.B) { benchmarkTelemetry(b, "", []byte(benchJSONObject)) })
	b.Run("senml-json", func(b *testing.B) { benchmarkTelemetry(b, SenMLJSON, []byte(benchSenMLJSON)) })
	b.Run("cbor-map", func(b *testing.B) { benchmarkTelemetry(b, CBOR, benchCBORMap) })
	b.Run("senml-cbor", func(b *testing.B) { benchmarkTelemetry(b, SenMLCBOR, cborMultipleMeasurements) })
}

func BenchmarkDecodeObject(b *testing.B) {
	body := []byte(`{"led":"on","level":3,"pos":{"x":1.5,"y":-2},"mode":"auto","interval":60}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeObject(JSON, body); err != nil {
			b.Fatal(err)
		}
	}
}
