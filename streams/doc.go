// Package streams is the hub's spine: the one message envelope, the mapping between MQTT-style
// topics and NATS subjects, the embedded (or external) NATS server with JetStream, and the
// streams every other component reads.
//
// Everything downstream of the protocol adapters reads these streams, never the adapters: the
// DEVICES stream is the system of record for raw device messages (kept for the configured
// retention), the buffer in front of storage and the source of replays. Rejected messages go to
// the DEADLETTERS stream with the reason.
package streams
