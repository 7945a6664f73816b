// Package rules runs windowed rules on the hub's streams: SQL queries (rules/sql) compiled for
// the event-time window engine (streams/window), fed from the IOT stream, with results
// published back to it exactly once.
//
// A [Manager] keeps rule definitions in the JetStream KV bucket "rules" and runs every enabled
// rule on every instance that runs a Manager, following changes made on any of them. Each rule
// has one runner goroutine owning its engine: it reads the rule's source in stream order,
// publishes results on rules/<name>/results, notifications on rules/<name>/alerts and the
// rule's outputs (MQTT topics, device commands, webhooks), late and rejected input on
// rules/<name>/late, and checkpoints its state to the KV bucket "rules-state".
//
// Rules with the same source share one ordered consumer (a feed): each message is read and
// decoded once and handed to every rule in batches. A rule that starts behind the feed catches
// up with consumers of its own first.
//
// # Exactly once
//
// Results are a deterministic function of the input, and each carries a deterministic ID
// (rule, window, group; plus a fingerprint of the rule's meaning) that is its JetStream
// message ID. A checkpoint is stored only after every output before it is acknowledged; after
// a crash the runner restores it, collects the IDs of the outputs already in the stream after
// it, and re-reads its input from the checkpoint: outputs produced again are not published
// again, whatever the downtime, and JetStream's duplicate window covers the rest.
//
// Webhooks are at least once: each notification carries its ID in X-Tributary-Id and
// Idempotency-Key, so receivers can drop repeats.
//
// See README.md for the semantics of windows, lateness, idle closing, outputs and notify modes,
// and the HTTP API.
package rules
