package devices

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/streams"
)

// ShadowBucket is the KV bucket of device shadows, keyed by device ID.
const ShadowBucket = "shadows"

// MaxStateSize is the largest reported or desired state document, in bytes of JSON.
const MaxStateSize = 64 << 10

// MetaShadowVersion is the envelope Meta key carrying the desired version on
// devices/{id}/state/desired messages the hub publishes.
const MetaShadowVersion = "shadow_version"

// DesiredTopic and ReportedTopic are a device's shadow topics.
func DesiredTopic(id string) string  { return "devices/" + id + "/state/desired" }
func ReportedTopic(id string) string { return "devices/" + id + "/state/reported" }

// Shadow is a device's reported and desired state, their versions and the delta.
type Shadow struct {
	Device   string         `json:"device"`
	Reported map[string]any `json:"reported"`
	Desired  map[string]any `json:"desired"`
	// Delta is what desired has that reported does not match (see Delta).
	Delta map[string]any `json:"delta"`
	// Version is the desired version: what PUT .../state/desired takes as If-Match.
	Version           uint64     `json:"version"`
	ReportedVersion   uint64     `json:"reported_version"`
	DesiredUpdatedAt  *time.Time `json:"desired_updated_at,omitempty"`
	ReportedUpdatedAt *time.Time `json:"reported_updated_at,omitempty"`
}

// shadowRecord is what the bucket holds.
type shadowRecord struct {
	Reported        map[string]any `json:"reported,omitempty"`
	Desired         map[string]any `json:"desired,omitempty"`
	DesiredVersion  uint64         `json:"desired_version"`
	ReportedVersion uint64         `json:"reported_version"`
	DesiredAt       time.Time      `json:"desired_at,omitzero"`
	ReportedAt      time.Time      `json:"reported_at,omitzero"`
	// ReportedSeq is the stream sequence of the last reported state applied, so a redelivered
	// message is applied once.
	ReportedSeq uint64 `json:"reported_seq,omitempty"`
}

func (r shadowRecord) public(id string) Shadow {
	s := Shadow{Device: id, Reported: r.Reported, Desired: r.Desired, Version: r.DesiredVersion, ReportedVersion: r.ReportedVersion}
	if s.Reported == nil {
		s.Reported = map[string]any{}
	}
	if s.Desired == nil {
		s.Desired = map[string]any{}
	}
	s.Delta = Delta(s.Desired, s.Reported)
	if !r.DesiredAt.IsZero() {
		t := r.DesiredAt
		s.DesiredUpdatedAt = &t
	}
	if !r.ReportedAt.IsZero() {
		t := r.ReportedAt
		s.ReportedUpdatedAt = &t
	}
	return s
}

// Delta returns the parts of desired that reported does not match: every key of desired whose
// value differs from reported's (or that reported lacks). Where both values are objects the
// comparison recurses, so the delta holds only the differing nested keys; arrays and other
// values are compared whole. Keys only reported has are not in the delta.
func Delta(desired, reported map[string]any) map[string]any {
	out := map[string]any{}
	for k, dv := range desired {
		rv, ok := reported[k]
		if dm, isObj := dv.(map[string]any); isObj && ok {
			if rm, isObj := rv.(map[string]any); isObj {
				if sub := Delta(dm, rm); len(sub) > 0 {
					out[k] = sub
				}
				continue
			}
		}
		if !ok || !reflect.DeepEqual(dv, rv) {
			out[k] = dv
		}
	}
	return out
}

// mergePatch applies patch to doc as RFC 7396 JSON Merge Patch: a null removes the key,
// objects merge recursively, anything else replaces. doc is modified and returned.
func mergePatch(doc, patch map[string]any) map[string]any {
	if doc == nil {
		doc = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(doc, k)
		case map[string]any:
			cur, _ := doc[k].(map[string]any)
			doc[k] = mergePatch(cloneObject(cur), pv)
		default:
			doc[k] = v
		}
	}
	return doc
}

func cloneObject(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Shadows keeps device shadows: reported state from devices/{id}/state/reported messages of
// any protocol (read from the stream by a durable consumer), desired state set over the API
// (or published by applications on devices/{id}/state/desired) and delivered to the device on
// that topic.
type Shadows struct {
	kv  jetstream.KeyValue
	js  jetstream.JetStream
	pub Publisher
	reg *Registry
	log *slog.Logger
	now func() time.Time
}

func newShadows(ctx context.Context, js jetstream.JetStream, reg *Registry, pub Publisher, replicas int, log *slog.Logger) (*Shadows, error) {
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: ShadowBucket, Description: "Tributary device shadows", History: 1,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("shadow bucket: %w", err)
	}
	return &Shadows{kv: kv, js: js, pub: pub, reg: reg, log: log, now: time.Now}, nil
}

// Get returns device id's shadow (empty documents when nothing was reported or desired yet).
func (s *Shadows) Get(ctx context.Context, id string) (Shadow, error) {
	if !s.reg.Exists(id) {
		return Shadow{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	rec, _, err := s.read(ctx, id)
	if err != nil {
		return Shadow{}, err
	}
	return rec.public(id), nil
}

func (s *Shadows) read(ctx context.Context, id string) (shadowRecord, uint64, error) {
	var rec shadowRecord
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return rec, 0, nil
	}
	if err != nil {
		return rec, 0, fmt.Errorf("read shadow %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return rec, 0, fmt.Errorf("read shadow %s: %w", id, err)
	}
	return rec, e.Revision(), nil
}

// errNoChange leaves the record as it is.
var errNoChange = errors.New("no change")

// update changes id's record with optimistic concurrency (retrying KV conflicts: a conflict
// the caller must hear of is change's own error).
func (s *Shadows) update(ctx context.Context, id string, change func(*shadowRecord) error) (shadowRecord, error) {
	for attempt := 0; attempt < 10; attempt++ {
		rec, rev, err := s.read(ctx, id)
		if err != nil {
			return rec, err
		}
		if err := change(&rec); err != nil {
			return rec, err
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return rec, err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, id, data)
		} else {
			_, err = s.kv.Update(ctx, id, data, rev)
		}
		if err == nil {
			return rec, nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || strings.Contains(err.Error(), "wrong last sequence") {
			continue
		}
		return rec, fmt.Errorf("write shadow %s: %w", id, err)
	}
	return shadowRecord{}, fmt.Errorf("%w: shadow of %s changed too often; retry", ErrConflict, id)
}

// VersionConflictError is returned by SetDesired when the version given is not the current
// one; Current is.
type VersionConflictError struct{ Given, Current uint64 }

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("desired state is at version %d, not %d: read it again and retry", e.Current, e.Given)
}
func (e *VersionConflictError) Unwrap() error { return ErrConflict }

// checkState refuses documents over MaxStateSize.
func checkState(what string, doc map[string]any) error {
	data, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	if len(data) > MaxStateSize {
		return fmt.Errorf("%w: %s is %d bytes of JSON, the limit is %d", ErrTooLarge, what, len(data), MaxStateSize)
	}
	return nil
}

// SetDesired replaces (merge false) or merge-patches (merge true, RFC 7396) device id's desired
// state. With version not nil it succeeds only if the desired version is still *version
// (else a *VersionConflictError). On success the new desired state is published on
// devices/{id}/state/desired, from where it reaches the device (retained over MQTT, observed
// over CoAP) and every other subscriber.
func (s *Shadows) SetDesired(ctx context.Context, id string, doc map[string]any, version *uint64, merge bool) (Shadow, error) {
	if !s.reg.Exists(id) {
		return Shadow{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if doc == nil {
		return Shadow{}, fmt.Errorf("%w: desired state must be a JSON object", ErrInvalid)
	}
	rec, err := s.update(ctx, id, func(r *shadowRecord) error {
		if version != nil && *version != r.DesiredVersion {
			return &VersionConflictError{Given: *version, Current: r.DesiredVersion}
		}
		next := doc
		if merge {
			next = mergePatch(cloneObject(r.Desired), doc)
		}
		if err := checkState("desired state", next); err != nil {
			return err
		}
		r.Desired = next
		r.DesiredVersion++
		r.DesiredAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return Shadow{}, err
	}
	if err := s.publishDesired(ctx, id, rec); err != nil {
		return rec.public(id), err
	}
	return rec.public(id), nil
}

// publishDesired sends the desired document to the device's topic. Its message ID is derived
// from the version, so a retry is stored once.
func (s *Shadows) publishDesired(ctx context.Context, id string, rec shadowRecord) error {
	data, err := json.Marshal(rec.Desired)
	if err != nil {
		return err
	}
	v := strconv.FormatUint(rec.DesiredVersion, 10)
	env := &streams.Envelope{
		ID:          "desired-" + id + "-" + v + "-" + strconv.FormatInt(rec.DesiredAt.UnixNano(), 36),
		DeviceID:    id,
		Topic:       DesiredTopic(id),
		ContentType: payload.JSON,
		Protocol:    "hub",
		Payload:     data,
		Meta:        map[string]string{MetaShadowVersion: v},
	}
	env.Stamp(s.now())
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		if _, last = s.pub.Publish(ctx, env); last == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("%w: desired state saved as version %d but not yet published: %v", ErrUnavailable, rec.DesiredVersion, last)
}

// run applies reported states and applications' desired states from the stream until ctx ends.
func (s *Shadows) run(ctx context.Context) error {
	return consume(ctx, s.js, "shadows", []string{"iot.devices.*.state.reported", "iot.devices.*.state.desired"}, s.log, s.apply)
}

// apply takes one state message into the shadow.
func (s *Shadows) apply(ctx context.Context, env *streams.Envelope) error {
	id := env.DeviceID
	if id == "" || !s.reg.Exists(id) {
		return nil
	}
	doc, err := payload.DecodeObject(env.ContentType, env.Payload)
	if err != nil {
		s.log.Debug("state message is not an object; ignored", "topic", env.Topic, "err", err)
		return nil
	}
	if strings.HasSuffix(env.Topic, "/state/desired") {
		if env.Meta[MetaShadowVersion] != "" {
			return nil // published by SetDesired, already in the shadow
		}
		_, err := s.update(ctx, id, func(r *shadowRecord) error {
			if err := checkState("desired state", doc); err != nil {
				return err
			}
			r.Desired = doc
			r.DesiredVersion++
			r.DesiredAt = env.ReceivedAt.UTC()
			return nil
		})
		if errors.Is(err, ErrTooLarge) {
			s.log.Warn("desired state not taken into the shadow", "device", id, "err", err)
			return nil
		}
		return err
	}
	_, err = s.update(ctx, id, func(r *shadowRecord) error {
		if env.Seq != 0 && env.Seq <= r.ReportedSeq {
			return errNoChange
		}
		next := mergePatch(cloneObject(r.Reported), doc)
		if err := checkState("reported state", next); err != nil {
			return err
		}
		r.Reported = next
		r.ReportedVersion++
		r.ReportedAt = env.ReceivedAt.UTC()
		r.ReportedSeq = env.Seq
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
		return nil
	case errors.Is(err, ErrTooLarge):
		s.log.Warn("reported state not taken into the shadow", "device", id, "err", err)
		return nil
	}
	return err
}

// forget removes device id's shadow.
func (s *Shadows) forget(ctx context.Context, id string) {
	if err := s.kv.Purge(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		s.log.Warn("shadow not removed", "device", id, "err", err)
	}
}
