// Package window is the windowed aggregation engine: pure, event-time, no I/O.
package window
