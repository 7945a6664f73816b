// Package mqtt is the hub's MQTT 3.1.1 and 5 broker (mochi-mqtt), over TCP and WebSocket.
//
// It is a thin translator: devices log in with their ID and token and applications with
// username "app" and an API key; every PUBLISH goes through the shared ingest pipeline
// (protocols.Ingest), which checks it, stores it in JetStream (QoS 1/2: before the PUBACK) or
// dead-letters it with a reason; and subscribers receive what the stream holds, through one
// fan-out subscription, whatever protocol a message came in on. README.md in this directory
// describes how MQTT's QoS, retain, sessions and reason codes map onto that.
package mqtt
