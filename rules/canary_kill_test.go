package rules_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestKill9Canary kills hubd with SIGKILL while a canary is processing (the input of TestKill9,
// shortened), restarts it on the same data directory, finishes the input, and compares what
// the canary published — per-interval results, whose verdicts depend on the history kept in its
// checkpoint, and fired/cleared alerts — with an uninterrupted run: the same messages, each once.
func TestKill9Canary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs hubd")
	}
	t.Parallel()
	bin := buildHubd(t)
	const events, killAt = 800, 400
	send := func(p *hubProc, tokens map[string]string, from, to int) {
		sendKill(t, p, tokens, from, to)
	}
	run := func(kill bool) []string {
		dir := t.TempDir()
		p := startHubd(t, bin, dir)
		tokens := map[string]string{}
		for d := range killDevices {
			id := fmt.Sprintf("k%d", d)
			var out struct{ Token string }
			if code := p.do("POST", "/api/v1/devices", map[string]any{"id": id, "type": "meter"}, &out); code != http.StatusCreated {
				t.Fatalf("create device %s: %d", id, code)
			}
			tokens[id] = out.Token
		}
		if code := p.do("POST", "/api/v1/canaries", map[string]any{"name": "kc", "lateness": "0s", "idle_timeout": "0s",
			"interval": "1s", "notify": "change", "intervals": 20, "canary_group": map[string]any{"devices": []string{"k0", "k1"}},
			"control_group": map[string]any{"devices": []string{"k2", "k3", "k4"}},
			"metrics":       []map[string]any{{"field": "v", "tolerance": 0.1}}}, nil); code != http.StatusCreated {
			t.Fatalf("create canary: %d", code)
		}
		eventually(t, 10*time.Second, func() bool { s := p.stats("kc"); return s.Running && !s.CatchingUp }, "canary not running")
		if kill {
			// A checkpoint after the first part, then more input, then the kill: the restart
			// restores the checkpoint (with the verdict history of 20 intervals) and re-reads
			// only what came after it.
			send(p, tokens, 0, killAt)
			sent := time.Now()
			eventually(t, 20*time.Second, func() bool { s := p.stats("kc"); return s.EventsIn == killAt && s.LastCheckpoint.After(sent) }, "no checkpoint")
			send(p, tokens, killAt, killAt+100)
			p.kill()
			p = startHubd(t, bin, dir)
			eventually(t, 20*time.Second, func() bool { s := p.stats("kc"); return s.Running && !s.CatchingUp }, "canary not running after restart")
			send(p, tokens, killAt+100, events)
		} else {
			send(p, tokens, 0, events)
		}
		send(p, tokens, killEvents, killEvents+1) // an hour later: closes every interval
		var out []string
		eventually(t, 30*time.Second, func() bool {
			kc := p.stats("kc")
			out = outputs(t, p)
			return kc.EventsIn == events+1 && kc.ConsumerLag == 0 && len(out) == int(kc.Results+kc.Notifications)
		}, "canary did not settle")
		kc := p.stats("kc")
		if kc.Results != events/20 || kc.Notifications < 1 {
			t.Fatalf("canary: %d results, %d alerts; want one result per 1s interval (%d) and an alert", kc.Results, kc.Notifications, events/20)
		}
		t.Logf("kill=%v: canary %d results, %d alerts, %d re-emitted outputs skipped", kill, kc.Results, kc.Notifications, kc.DuplicatesSkipped)
		p.kill()
		return out
	}
	want, got := run(false), run(true)
	if !slices.Equal(got, want) {
		missing, extra := diff(want, got), diff(got, want)
		t.Errorf("after kill -9: %d messages, want %d; missing %d, e.g. %q; extra %d, e.g. %q",
			len(got), len(want), len(missing), first(missing), len(extra), first(extra))
	}
}
