// Package deploy holds example deployment files — a container image definition, systemd units,
// Kubernetes manifests and a Procfile for the dev cluster — and tests that they parse and agree
// with hubd's settings. It has no code of its own; see README.md here.
package deploy
