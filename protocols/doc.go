// Package protocols holds what every protocol adapter shares: the device topic layout, the
// ingest pipeline (check the topic against the sender's identity, validate the payload, store in
// JetStream, dead-letter what is rejected) and the errors adapters translate into MQTT reason
// codes and CoAP response codes. The adapters themselves live in protocols/mqtt and
// protocols/coap and stay thin.
package protocols
