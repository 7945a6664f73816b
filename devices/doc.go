// Package devices is the device registry: identities, metadata and credentials kept in a
// JetStream KV bucket, with an in-memory view kept current by a KV watch so that
// authentication on the connect path never waits on the network, and every hub instance on the
// same NATS sees the same devices.
//
// Tokens are 128-bit random values shown once; only their SHA-256 is stored. A slow password
// hash is not needed for secrets of that entropy, and SHA-256 keeps an MQTT connect well under
// a millisecond.
package devices
