// Package auth holds who may do what: scoped API keys (stored hashed in JetStream KV, with a
// current in-memory view on every hub instance), tenants with their quotas, and the Principal a
// request or connection acts as. It knows nothing of HTTP or MQTT; the API and the protocol
// adapters translate its answers into their own codes.
package auth
