// Package api is the hub's HTTP interface: the REST API of SPEC.md, live streams (Server-Sent
// Events and WebSocket), health and metrics. Handlers translate HTTP into calls on the domain
// packages through small interfaces declared here, and domain errors into status codes and
// {"error": "..."} bodies.
package api
