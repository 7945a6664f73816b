package replay_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/simulator/simtest"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// steady checks that sent does not change over d (a paused or cancelled job publishes nothing).
func steady(t *testing.T, h *hubtest.Hub, id string, d time.Duration) replay.Job {
	t.Helper()
	first := simtest.GetJob(t, h, id)
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if j := simtest.GetJob(t, h, id); j.Progress.Sent != first.Progress.Sent {
			t.Fatalf("replay %s (%s) sent %d, then %d: want no progress", id, j.Status, first.Progress.Sent, j.Progress.Sent)
		}
	}
	return first
}

func TestPauseResumeCancelDelete(t *testing.T) {
	h := hubtest.Start(t)
	nc, js := simtest.Connect(t, h)
	rec := simtest.Record(t, js, []string{"d1"}, 150, 3*time.Second, 3)
	c := simtest.Collect(t, nc, "iot.sandbox.>")
	job := simtest.StartReplay(t, h, map[string]any{"from": rec.Base.Add(-time.Second).Format(time.RFC3339Nano)})
	if job.Status != replay.Running || job.Request.Speed != 1 || job.Request.Target != replay.TargetSandbox {
		t.Fatalf("new job %+v: want running at speed 1 into the sandbox", job)
	}
	simtest.WaitJob(t, h, job.ID, 5*time.Second, "some progress", func(j replay.Job) bool { return j.Progress.Sent >= 20 })

	var out replay.Job
	if code := h.Do("POST", "/api/v1/replays/"+job.ID+"/pause", nil, &out); code != http.StatusOK || out.Status != replay.Paused {
		t.Fatalf("pause: got %d %s, want 200 paused", code, out.Status)
	}
	paused := steady(t, h, job.ID, 400*time.Millisecond)
	if code := h.Do("POST", "/api/v1/replays/"+job.ID+"/pause", nil, nil); code != http.StatusConflict {
		t.Fatalf("pause a paused replay: got %d, want 409", code)
	}

	if code := h.Do("POST", "/api/v1/replays/"+job.ID+"/resume", nil, &out); code != http.StatusOK || out.Status != replay.Running {
		t.Fatalf("resume: got %d %s, want 200 running", code, out.Status)
	}
	simtest.WaitJob(t, h, job.ID, 5*time.Second, "progress after resume", func(j replay.Job) bool { return j.Progress.Sent > paused.Progress.Sent+5 })
	if code := h.Do("POST", "/api/v1/replays/"+job.ID+"/resume", nil, nil); code != http.StatusConflict {
		t.Fatalf("resume a running replay: got %d, want 409", code)
	}

	if code := h.Do("POST", "/api/v1/replays/"+job.ID+"/cancel", nil, &out); code != http.StatusOK || out.Status != replay.Cancelled {
		t.Fatalf("cancel: got %d %s, want 200 cancelled", code, out.Status)
	}
	cancelled := steady(t, h, job.ID, 300*time.Millisecond)
	if cancelled.Progress.Sent >= uint64(len(rec.Envs)) || cancelled.FinishedAt.IsZero() || cancelled.Progress.Fraction >= 1 {
		t.Fatalf("cancelled job %+v: want part of the recording sent and finished_at set", cancelled)
	}
	hubtest.Eventually(t, 5*time.Second, func() bool { return uint64(c.Count()) == cancelled.Progress.Sent },
		"subscriber got %d messages, job says %d", c.Count(), cancelled.Progress.Sent)
	if code := h.Do("POST", "/api/v1/replays/"+job.ID+"/resume", nil, nil); code != http.StatusConflict {
		t.Fatalf("resume a cancelled replay: got %d, want 409", code)
	}

	var list struct{ Replays []replay.Job }
	if code := h.Do("GET", "/api/v1/replays", nil, &list); code != http.StatusOK || len(list.Replays) != 1 || list.Replays[0].ID != job.ID {
		t.Fatalf("list: got %d %+v, want the one job", code, list)
	}
	if got := simtest.StreamCount(t, js, "IOT", replay.SandboxSubject(job.ID)); got != cancelled.Progress.Sent {
		t.Fatalf("sandbox holds %d messages, want %d", got, cancelled.Progress.Sent)
	}
	if code := h.Do("DELETE", "/api/v1/replays/"+job.ID, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete: got %d, want 204", code)
	}
	if code := h.Do("GET", "/api/v1/replays/"+job.ID, nil, nil); code != http.StatusNotFound {
		t.Fatalf("get after delete: got %d, want 404", code)
	}
	if got := simtest.StreamCount(t, js, "IOT", replay.SandboxSubject(job.ID)); got != 0 {
		t.Fatalf("sandbox holds %d messages after delete, want 0", got)
	}
}

// TestRestartResumes stops the hub in the middle of a replay and starts it again on the same
// data: the job continues from its checkpoint, and every message is in the sandbox exactly once.
func TestRestartResumes(t *testing.T) {
	dir := t.TempDir()
	h1 := hubtest.StartConfig(t, hubtest.Config(dir))
	_, js := simtest.Connect(t, h1)
	rec := simtest.Record(t, js, []string{"d1", "d2"}, 150, 3*time.Second, 4)
	job := simtest.StartReplay(t, h1, map[string]any{"from": rec.Base.Add(-time.Second).Format(time.RFC3339Nano)})
	simtest.WaitJob(t, h1, job.ID, 5*time.Second, "a third sent", func(j replay.Job) bool { return j.Progress.Sent >= 50 })
	h1.Stop()

	h2 := hubtest.StartConfig(t, hubtest.Config(dir))
	_, js2 := simtest.Connect(t, h2)
	done := simtest.WaitJob(t, h2, job.ID, 15*time.Second, "done after the restart", func(j replay.Job) bool { return j.Status == replay.Done })
	if done.Resumes != 1 || done.Progress.Sent != uint64(len(rec.Envs)) {
		t.Fatalf("resumed job: resumes %d, sent %d; want 1 and %d", done.Resumes, done.Progress.Sent, len(rec.Envs))
	}
	if got := simtest.StreamCount(t, js2, "IOT", replay.SandboxSubject(job.ID)); got != uint64(len(rec.Envs)) {
		t.Fatalf("sandbox holds %d messages, want each of the %d once", got, len(rec.Envs))
	}
	t.Logf("resumed: %+v, pacing p50 %.3fms p99 %.3fms", done.Progress, done.Pacing.P50Ms, done.Pacing.P99Ms)
}

// TestRestartInterrupts: with on_restart "interrupt", a job its hub left running is reported as
// interrupted, with the reason, instead of resumed.
func TestRestartInterrupts(t *testing.T) {
	bus := streamstest.New(t)
	_, js := bus.Conn(), bus.JetStream()
	rec := simtest.Record(t, js, []string{"d1"}, 100, 3*time.Second, 5)
	res := simulator.NewResolver(js, nil, nil)

	run := func(cfg replay.Config) (*replay.Manager, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		m, err := replay.New(ctx, bus.Conn(), cfg, res, streamstest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		return m, cancel, done
	}
	m1, stop1, done1 := run(replay.Config{})
	job, err := m1.Start(simtest.Ctx(t), replay.Request{Selection: simulator.Selection{From: rec.Base.Add(-time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	stop1()
	<-done1

	m2, stop2, done2 := run(replay.Config{OnRestart: "interrupt"})
	defer func() { stop2(); <-done2 }()
	var j replay.Job
	hubtest.Eventually(t, 5*time.Second, func() bool {
		j, err = m2.Get(simtest.Ctx(t), job.ID)
		return err == nil && j.Status == replay.Interrupted
	}, "job %s is %s (%v), want interrupted", job.ID, j.Status, err)
	if j.Error == "" || j.FinishedAt.IsZero() {
		t.Fatalf("interrupted job %+v: want the reason and finished_at", j)
	}
	t.Logf("reason: %s", j.Error)
}
