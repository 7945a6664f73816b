package replay

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/simulator"
)

// Target is where replayed messages go.
type Target string

const (
	// TargetSandbox (the default) publishes to "sandbox/{replay ID}/{original topic}" (subject
	// iot.sandbox.<id>.<original subject without iot.>) in the IOT stream: never on a device
	// topic, so live device subscribers, storage and rules, which read devices/..., never see it.
	TargetSandbox Target = "sandbox"
	// TargetLive publishes on the original topic with the Tb-Replay header set to the replay ID
	// and a fresh message ID; downstream sees it like live traffic and can tell it apart.
	TargetLive Target = "live"
)

// Speed is how fast a replay runs: 1 keeps the original pacing of event times, N is N times
// faster, and Max (JSON "max") publishes as fast as the stream takes it.
type Speed float64

// Max is speed "max".
var Max = Speed(math.Inf(1))

// Speed limits.
const (
	MinSpeed = 0.01
	MaxSpeed = 100000
)

// IsMax reports whether s is "max".
func (s Speed) IsMax() bool { return math.IsInf(float64(s), 1) }

// MarshalJSON writes a number, or "max".
func (s Speed) MarshalJSON() ([]byte, error) {
	if s.IsMax() {
		return []byte(`"max"`), nil
	}
	return json.Marshal(float64(s))
}

// UnmarshalJSON reads a number or "max".
func (s *Speed) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		if str == "max" {
			*s = Max
			return nil
		}
		if f, err := strconv.ParseFloat(str, 64); err == nil {
			*s = Speed(f)
			return nil
		}
		return fmt.Errorf("speed: got %q, want a number from %g to %g or \"max\"", str, float64(MinSpeed), float64(MaxSpeed))
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("speed: got %s, want a number from %g to %g or \"max\"", b, float64(MinSpeed), float64(MaxSpeed))
	}
	if !(f > 0) { // an explicit 0 is out of range, not the default
		return fmt.Errorf("speed: %g out of range: want a number from %g to %g or \"max\"", f, float64(MinSpeed), float64(MaxSpeed))
	}
	*s = Speed(f)
	return nil
}

func (s Speed) String() string {
	if s.IsMax() {
		return "max"
	}
	return strconv.FormatFloat(float64(s), 'g', -1, 64)
}

// Request starts a replay: a selection (a time range with devices and topics, or a scenario),
// a speed and a target.
type Request struct {
	simulator.Selection
	// Speed defaults to 1.
	Speed Speed `json:"speed,omitempty"`
	// Target defaults to sandbox.
	Target Target `json:"target,omitempty"`
	// Tenant owns the job ("" the default tenant); the API lets a key confined to a tenant
	// replay only that tenant's devices and see only its jobs.
	Tenant string `json:"tenant,omitempty"`
}

// normalize fills in defaults and checks speed and target (the selection is checked when it is
// resolved).
func (r *Request) normalize() error {
	if r.Speed == 0 {
		r.Speed = 1
	}
	if r.Target == "" {
		r.Target = TargetSandbox
	}
	if !r.Speed.IsMax() && (math.IsNaN(float64(r.Speed)) || r.Speed < MinSpeed || r.Speed > MaxSpeed) {
		return fmt.Errorf("%w: speed: %s out of range: want a number from %g to %g or \"max\"", simulator.ErrInvalid, r.Speed, float64(MinSpeed), float64(MaxSpeed))
	}
	if r.Target != TargetSandbox && r.Target != TargetLive {
		return fmt.Errorf("%w: target: got %q, want \"sandbox\" or \"live\"", simulator.ErrInvalid, r.Target)
	}
	return nil
}

// Status of a replay job.
type Status string

const (
	Running     Status = "running"
	Paused      Status = "paused"
	Done        Status = "done"
	Cancelled   Status = "cancelled"
	Failed      Status = "failed"
	Interrupted Status = "interrupted" // the hub stopped and the job could not be resumed
)

// Active reports whether a job in this status holds a runner.
func (s Status) Active() bool { return s == Running || s == Paused }

// Progress of a job.
type Progress struct {
	// Position is the stream sequence of the last source message handled (released or
	// skipped); a resumed job continues after it.
	Position uint64 `json:"position"`
	// Sent counts messages published; Skipped counts messages read but outside the selection;
	// Failed counts publishes the stream did not acknowledge.
	Sent    uint64 `json:"sent"`
	Skipped uint64 `json:"skipped"`
	Failed  uint64 `json:"failed,omitempty"`
	// OutOfOrder counts messages whose event time is earlier than one released before them;
	// they are released at once, in stream order.
	OutOfOrder uint64 `json:"out_of_order"`
	// Fraction is how far through the source's sequence range the job is, 0 to 1.
	Fraction float64 `json:"fraction"`
	// Offset is the event-time offset from the first message reached so far.
	Offset simulator.Duration `json:"offset"`
	// EventTime is the event time of the last message released.
	EventTime time.Time `json:"event_time,omitzero"`
}

// Pacing summarises how late messages were released against their recorded offsets (at finite
// speeds; in-order messages only).
type Pacing struct {
	Samples uint64  `json:"samples"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// Buckets is the histogram behind the summary (index → count), kept across restarts.
	Buckets map[int]uint64 `json:"buckets,omitempty"`
}

// Job is a replay as the API shows it and the KV bucket keeps it.
type Job struct {
	ID      string  `json:"id"`
	Request Request `json:"request"`
	Status  Status  `json:"status"`
	// SandboxPrefix is the topic prefix of the output for sandbox replays: "sandbox/{id}/".
	SandboxPrefix string           `json:"sandbox_prefix,omitempty"`
	Source        simulator.Source `json:"source"`
	Progress      Progress         `json:"progress"`
	Pacing        Pacing           `json:"pacing"`
	Error         string           `json:"error,omitempty"`
	// Resumes counts how often the job was taken up again after its hub stopped.
	Resumes    int       `json:"resumes,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Owner is the hub instance running the job; Heartbeat is its last checkpoint. An active
	// job whose heartbeat is older than the lease is taken over by another instance.
	Owner     string    `json:"owner,omitempty"`
	Heartbeat time.Time `json:"heartbeat,omitzero"`
}

func (j *Job) fraction() float64 {
	src := j.Source
	if j.Status == Done {
		return 1
	}
	if src.EndSeq <= src.StartSeq || j.Progress.Position < src.StartSeq {
		return 0
	}
	return math.Min(1, float64(j.Progress.Position-src.StartSeq+1)/float64(src.EndSeq-src.StartSeq+1))
}
