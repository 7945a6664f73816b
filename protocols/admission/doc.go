// Package admission decides what the hub lets in: per-device and per-tenant message and byte
// rates (token buckets from golang.org/x/time/rate), connection counts per device, per tenant
// and in total, throttling of failed authentication per source address, and a per-key rate
// for the HTTP API.
//
// It only decides; the protocol adapters translate its answers at the edge: MQTT delays the
// PUBACK of a QoS 1 message up to Config.MaxDelay (back-pressure) and disconnects with reason
// 0x96 or 0x97 beyond that, drops QoS 0 messages over the limit; CoAP answers 4.29 with
// Max-Age; HTTP answers 429 with Retry-After.
//
// Limits are resolved per device from a Directory (its tenant, its own limits and its type's)
// at most once a second, so changes made over the API apply within a second without a lookup
// on every message.
package admission
