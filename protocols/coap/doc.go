// Package coap is the hub's CoAP adapter (RFC 7252) over UDP and, with pre-shared keys, DTLS,
// built on go-coap.
//
// The paths are the MQTT topics of SPEC.md: POST or PUT to /devices/{id}/telemetry (or
// events/{name}, state/reported, commands/{name}/result) sends a message through the shared
// ingest pipeline, and a confirmable request is answered only once JetStream has stored it. A
// GET returns the newest message stored on a topic; a GET with Observe (RFC 7641) subscribes
// to it, and every message stored on the topic afterwards, whatever protocol brought it,
// arrives as a confirmable notification. /.well-known/core describes the layout (RFC 6690).
//
// Credentials are a URI query (?token=<device token>, or ?key=<API key> for applications) or,
// over DTLS, the PSK identity (device ID or "app") with the key PSKFromToken(token) or the
// API key. README.md has the details: response codes, observe semantics, limits.
package coap
