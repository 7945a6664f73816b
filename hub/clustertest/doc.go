// Package clustertest holds the end-to-end tests of several hubs on a 3-node NATS cluster:
// delivery across instances, and the fault tests — a hub killed with SIGKILL while devices
// publish, a NATS node stopped during ingest, InfluxDB down during ingest — and the soak run
// (HUB_SOAK=10m). It has no code of its own; see the README section "Fault tests".
package clustertest
