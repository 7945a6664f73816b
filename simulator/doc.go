// Package simulator answers "what would my system have done?": it selects stored messages (a time
// range of the IOT stream, filtered by devices and topics, or a saved scenario) and hands them,
// in order, to a replay (simulator/replay), to a scenario being saved (simulator/scenario) or to
// an in-process consumer such as a rule backtest (Input). Virtual device fleets that speak real
// MQTT and CoAP live in simulator/fleet.
//
// This package holds what those share: Selection (what to read, with validation whose errors
// name the field), Resolver (a selection → a Source: stream, subjects and sequence bounds) and
// Reader/Input (the messages of a Source in stream order, or envelopes in event-time order).
//
// Ordering and time. A selection's range applies to event time: a message is selected when its
// event time lies in [From, To). The stream is read in stream-sequence order (the order the hub
// received messages) from the first message received at From−MaxSkew up to the stream's last
// message at resolve time or the first one received after To+MaxSkew, whichever comes first; so
// a device whose clock is off, or that sends late, by more than MaxSkew is not found. Sandbox
// output (topics under sandbox/) is never selected.
package simulator
