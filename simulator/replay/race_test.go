//go:build race

package replay_test

// raceEnabled: the race detector slows everything down several times.
const raceEnabled = true
