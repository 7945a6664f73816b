package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tributary-iot/tributary/payload"
	"github.com/tributary-iot/tributary/streams"
)

// CommandsBucket is the KV bucket of command records, keyed "<device>.<command id>". Records
// stay CommandRetention after their last change.
const CommandsBucket = "commands"

// Command statuses: pending → delivered → answered, or → expired when the TTL ends first.
const (
	CommandPending   = "pending"
	CommandDelivered = "delivered"
	CommandAnswered  = "answered"
	CommandExpired   = "expired"
)

// Command limits and defaults.
const (
	DefaultCommandTTL = time.Hour
	MaxCommandTTL     = 7 * 24 * time.Hour
	MinCommandTTL     = time.Second
	MaxCommandPayload = 64 << 10
	// CommandRetention is how long a record is kept after its last change.
	CommandRetention = 7 * 24 * time.Hour
)

// MetaCommandID is the envelope Meta key holding the command ID on command messages.
const MetaCommandID = "command_id"

// CommandTopic is the topic a command is delivered on.
func CommandTopic(device, name string) string { return "devices/" + device + "/commands/" + name }

// Command is one command to one device and what became of it.
type Command struct {
	ID      string          `json:"id"`
	Device  string          `json:"device"`
	Name    string          `json:"name"`
	Payload json.RawMessage `json:"payload"`
	Status  string          `json:"status"`
	// Sends counts publications to the device: the first, and one more each time the device
	// subscribes to (or observes) its commands while the command is pending.
	Sends       int             `json:"sends"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	SentAt      *time.Time      `json:"sent_at,omitempty"`
	DeliveredAt *time.Time      `json:"delivered_at,omitempty"`
	AnsweredAt  *time.Time      `json:"answered_at,omitempty"`
	ExpiredAt   *time.Time      `json:"expired_at,omitempty"`
	Result      json.RawMessage `json:"result,omitempty"`
}

func (c *Command) final() bool { return c.Status == CommandAnswered || c.Status == CommandExpired }

// CommandMessage is what a device receives on devices/{id}/commands/{name} (JSON).
type CommandMessage struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Payload   json.RawMessage `json:"payload"`
	ExpiresAt time.Time       `json:"expires_at"`
}

// CommandResult is what a device sends on devices/{id}/commands/{name}/result (JSON).
type CommandResult struct {
	ID     string          `json:"id"`
	Result json.RawMessage `json:"result"`
}

// ValidCommandName reports whether name can be a command: one topic level of 1..128 bytes
// without '/', '+', '#' or NUL.
func ValidCommandName(name string) bool {
	return name != "" && len(name) <= 128 && !strings.ContainsAny(name, "/+#\x00")
}

// Commands sends commands to devices and tracks them. A command is stored first (KV, so it
// survives restarts), then published on devices/{id}/commands/{name}; a device that is offline
// (or not subscribed) gets every pending command again each time it subscribes to or observes
// its commands, until it acknowledges it (MQTT PUBACK, CoAP ACK of the notification) or the TTL
// ends. Delivery is therefore at least once: devices tell repeats apart by ID.
type Commands struct {
	kv  jetstream.KeyValue
	js  jetstream.JetStream
	pub Publisher
	reg *Registry
	log *slog.Logger
	now func() time.Time

	mu sync.Mutex
	// open holds the commands not yet final, by device and ID: what Subscribed resends and the
	// sweeper expires.
	open map[string]map[string]*Command
	work chan func(context.Context)
}

func newCommands(ctx context.Context, js jetstream.JetStream, reg *Registry, pub Publisher, replicas int, log *slog.Logger) (*Commands, error) {
	kv, err := streams.OpenBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: CommandsBucket, Description: "Tributary device commands", History: 1,
		TTL: CommandRetention, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("commands bucket: %w", err)
	}
	c := &Commands{kv: kv, js: js, pub: pub, reg: reg, log: log, now: time.Now,
		open: map[string]map[string]*Command{}, work: make(chan func(context.Context), 1024)}
	if err := streams.LoadBucket(ctx, kv, c.apply); err != nil {
		return nil, err
	}
	return c, nil
}

func commandKey(device, id string) string { return device + "." + id }

func (c *Commands) apply(e jetstream.KeyValueEntry) {
	dev, id, ok := strings.Cut(e.Key(), ".")
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		c.forgetLocked(dev, id)
		return
	}
	var cmd Command
	if err := json.Unmarshal(e.Value(), &cmd); err != nil {
		c.log.Error("unreadable command record", "key", e.Key(), "err", err)
		return
	}
	if cmd.final() {
		c.forgetLocked(dev, id)
		return
	}
	m := c.open[dev]
	if m == nil {
		m = map[string]*Command{}
		c.open[dev] = m
	}
	m[id] = &cmd
}

func (c *Commands) forgetLocked(dev, id string) {
	if m := c.open[dev]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(c.open, dev)
		}
	}
}

// Send stores a command for device and publishes it at once if the device is online. ttl 0
// means DefaultCommandTTL. payload is any JSON value (nil: null).
func (c *Commands) Send(ctx context.Context, device, name string, payload json.RawMessage, ttl time.Duration) (Command, error) {
	switch {
	case !c.reg.Exists(device):
		return Command{}, fmt.Errorf("%w: %s", ErrNotFound, device)
	case !ValidCommandName(name):
		return Command{}, fmt.Errorf("%w: command name %q must be 1..128 bytes without '/', '+', '#' or NUL", ErrInvalid, name)
	case ttl == 0:
		ttl = DefaultCommandTTL
	case ttl < MinCommandTTL || ttl > MaxCommandTTL:
		return Command{}, fmt.Errorf("%w: ttl %v is outside %v..%v", ErrInvalid, ttl, MinCommandTTL, MaxCommandTTL)
	}
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	if !json.Valid(payload) {
		return Command{}, fmt.Errorf("%w: payload is not valid JSON", ErrInvalid)
	}
	if len(payload) > MaxCommandPayload {
		return Command{}, fmt.Errorf("%w: payload is %d bytes, the limit is %d", ErrTooLarge, len(payload), MaxCommandPayload)
	}
	now := c.now().UTC()
	cmd := Command{
		ID: streams.NewID(), Device: device, Name: name, Payload: compactJSON(payload), Status: CommandPending,
		CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	data, _ := json.Marshal(cmd)
	if _, err := c.kv.Create(ctx, commandKey(device, cmd.ID), data); err != nil {
		return Command{}, fmt.Errorf("%w: store command: %v", ErrUnavailable, err)
	}
	c.mu.Lock()
	m := c.open[device]
	if m == nil {
		m = map[string]*Command{}
		c.open[device] = m
	}
	cp := cmd
	m[cmd.ID] = &cp
	c.mu.Unlock()
	// Published at once whatever the device's status: a device that is connected and
	// subscribed gets it now (the status may lag a connection by a moment), one that is not
	// gets it again when it subscribes.
	if sent, err := c.publish(ctx, cmd); err == nil {
		cmd = sent
	} else {
		c.log.Warn("command stored but not yet published", "device", device, "command", cmd.ID, "err", err)
	}
	return cmd, nil
}

func compactJSON(b json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// publish sends cmd to its device's topic and records the send.
func (c *Commands) publish(ctx context.Context, cmd Command) (Command, error) {
	msg, _ := json.Marshal(CommandMessage{ID: cmd.ID, Name: cmd.Name, Payload: cmd.Payload, ExpiresAt: cmd.ExpiresAt})
	env := &streams.Envelope{
		DeviceID:    cmd.Device,
		Topic:       CommandTopic(cmd.Device, cmd.Name),
		ContentType: payload.JSON,
		Protocol:    "hub",
		Payload:     msg,
		Meta:        map[string]string{MetaCommandID: cmd.ID},
	}
	env.Stamp(c.now())
	if _, err := c.pub.Publish(ctx, env); err != nil {
		return cmd, err
	}
	return c.update(ctx, cmd.Device, cmd.ID, func(r *Command) error {
		if r.final() {
			return errNoChange
		}
		t := c.now().UTC()
		r.Sends++
		r.SentAt = &t
		return nil
	})
}

// update changes a record with optimistic concurrency.
func (c *Commands) update(ctx context.Context, device, id string, change func(*Command) error) (Command, error) {
	key := commandKey(device, id)
	for attempt := 0; attempt < 10; attempt++ {
		e, err := c.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Command{}, fmt.Errorf("%w: no command %s for device %s", ErrNotFound, id, device)
		}
		if err != nil {
			return Command{}, fmt.Errorf("%w: read command: %v", ErrUnavailable, err)
		}
		var cmd Command
		if err := json.Unmarshal(e.Value(), &cmd); err != nil {
			return Command{}, fmt.Errorf("read command %s: %w", key, err)
		}
		if err := change(&cmd); err != nil {
			return cmd, err
		}
		data, _ := json.Marshal(cmd)
		if _, err := c.kv.Update(ctx, key, data, e.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || strings.Contains(err.Error(), "wrong last sequence") {
				continue
			}
			return cmd, fmt.Errorf("%w: write command: %v", ErrUnavailable, err)
		}
		c.mu.Lock()
		if cmd.final() {
			c.forgetLocked(device, id)
		} else if m := c.open[device]; m != nil {
			cp := cmd
			m[id] = &cp
		}
		c.mu.Unlock()
		return cmd, nil
	}
	return Command{}, fmt.Errorf("%w: command %s", ErrConflict, id)
}

// Get returns one command of device.
func (c *Commands) Get(ctx context.Context, device, id string) (Command, error) {
	if !c.reg.Exists(device) {
		return Command{}, fmt.Errorf("%w: %s", ErrNotFound, device)
	}
	e, err := c.kv.Get(ctx, commandKey(device, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return Command{}, fmt.Errorf("%w: no command %s for device %s", ErrNotFound, id, device)
	}
	if err != nil {
		return Command{}, fmt.Errorf("%w: read command: %v", ErrUnavailable, err)
	}
	var cmd Command
	if err := json.Unmarshal(e.Value(), &cmd); err != nil {
		return Command{}, err
	}
	return cmd, nil
}

// List returns device's commands kept in the bucket, newest first, optionally of one status.
func (c *Commands) List(ctx context.Context, device, status string, limit int) ([]Command, error) {
	if !c.reg.Exists(device) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, device)
	}
	lister, err := c.kv.ListKeysFiltered(ctx, device+".*")
	if err != nil {
		return nil, fmt.Errorf("%w: list commands: %v", ErrUnavailable, err)
	}
	var out []Command
	for key := range lister.Keys() {
		e, err := c.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var cmd Command
		if json.Unmarshal(e.Value(), &cmd) == nil && (status == "" || cmd.Status == status) {
			out = append(out, cmd)
		}
	}
	slices.SortFunc(out, func(a, b Command) int { return b.CreatedAt.Compare(a.CreatedAt) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Subscribed is the adapters' callback for a device subscribing to (MQTT, including a session
// taken over with its subscriptions) or observing (CoAP) a filter of its commands: pending
// commands matching it are published again. It does not block.
func (c *Commands) Subscribed(device, filter string) {
	c.mu.Lock()
	var resend []Command
	for _, cmd := range c.open[device] {
		if cmd.Status == CommandPending && streams.MatchTopic(filter, CommandTopic(device, cmd.Name)) {
			resend = append(resend, *cmd)
		}
	}
	c.mu.Unlock()
	if len(resend) == 0 {
		return
	}
	slices.SortFunc(resend, func(a, b Command) int { return a.CreatedAt.Compare(b.CreatedAt) })
	c.enqueue(func(ctx context.Context) {
		for _, cmd := range resend {
			if !c.now().Before(cmd.ExpiresAt) {
				continue
			}
			if _, err := c.publish(ctx, cmd); err != nil && !errors.Is(err, errNoChange) && ctx.Err() == nil {
				c.log.Warn("pending command not published", "device", device, "command", cmd.ID, "err", err)
			}
		}
	})
}

func (c *Commands) enqueue(fn func(context.Context)) {
	select {
	case c.work <- fn:
	default:
		c.log.Warn("command work queue full; a resend waits for the next subscription")
	}
}

// Delivered is the adapters' callback for a command message the device acknowledged (MQTT
// PUBACK, CoAP ACK of the notification), or written to it for QoS 0 subscriptions. It does
// not block.
func (c *Commands) Delivered(device, topic string, msg []byte) {
	var m CommandMessage
	if err := json.Unmarshal(msg, &m); err != nil || m.ID == "" {
		return // not a command the hub sent (e.g. published by an application)
	}
	c.mu.Lock()
	cmd := c.open[device][m.ID]
	known := cmd != nil
	pending := known && cmd.Status == CommandPending
	c.mu.Unlock()
	if known && !pending {
		return
	}
	// A command sent through another instance can reach the device before this instance's KV
	// watch has seen its record: then the stored record decides (not found: not ours).
	at := c.now().UTC()
	c.enqueue(func(ctx context.Context) {
		_, err := c.update(ctx, device, m.ID, func(r *Command) error {
			if r.Status != CommandPending {
				return errNoChange
			}
			r.Status, r.DeliveredAt = CommandDelivered, &at
			return nil
		})
		if !known && errors.Is(err, ErrNotFound) {
			return
		}
		if err != nil && !errors.Is(err, errNoChange) && ctx.Err() == nil {
			c.log.Warn("command delivery not recorded", "device", device, "command", m.ID, "err", err)
		}
	})
}

// run handles results, resends and expiry until ctx ends.
func (c *Commands) run(ctx context.Context) error {
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Go(func() {
		errc <- consume(ctx, c.js, "command-results", []string{"iot.devices.*.commands.*.result"}, c.log, c.result)
	})
	wg.Go(func() { errc <- streams.WatchBucket(ctx, c.kv, c.apply) })
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				errc <- nil
				return
			case fn := <-c.work:
				fn(ctx)
			case <-t.C:
				c.expire(ctx)
			}
		}
	})
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	wg.Wait()
	return err
}

// result records a device's answer.
func (c *Commands) result(ctx context.Context, env *streams.Envelope) error {
	var r CommandResult
	if err := json.Unmarshal(env.Payload, &r); err != nil || r.ID == "" {
		c.log.Debug("command result without a command ID; not correlated", "topic", env.Topic)
		return nil
	}
	if len(r.Result) == 0 {
		r.Result = json.RawMessage("null")
	}
	at := env.ReceivedAt.UTC()
	_, err := c.update(ctx, env.DeviceID, r.ID, func(cmd *Command) error {
		if cmd.final() || !strings.HasPrefix(env.Topic, CommandTopic(env.DeviceID, cmd.Name)+"/") {
			return errNoChange // answered already, expired, or a result on another command's topic
		}
		if cmd.DeliveredAt == nil {
			cmd.DeliveredAt = &at // an answer proves delivery
		}
		cmd.Status, cmd.AnsweredAt, cmd.Result = CommandAnswered, &at, compactJSON(r.Result)
		return nil
	})
	if errors.Is(err, errNoChange) || errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// expire ends the commands whose TTL has passed.
func (c *Commands) expire(ctx context.Context) {
	now := c.now()
	var due []Command
	c.mu.Lock()
	for _, m := range c.open {
		for _, cmd := range m {
			if !now.Before(cmd.ExpiresAt) {
				due = append(due, *cmd)
			}
		}
	}
	c.mu.Unlock()
	for _, cmd := range due {
		_, err := c.update(ctx, cmd.Device, cmd.ID, func(r *Command) error {
			if r.final() {
				return errNoChange
			}
			t := now.UTC()
			r.Status, r.ExpiredAt = CommandExpired, &t
			return nil
		})
		if errors.Is(err, ErrNotFound) {
			c.mu.Lock()
			c.forgetLocked(cmd.Device, cmd.ID)
			c.mu.Unlock()
		}
	}
}

// forget drops every command of device (it was deleted).
func (c *Commands) forget(ctx context.Context, device string) {
	lister, err := c.kv.ListKeysFiltered(ctx, device+".*")
	if err == nil {
		for key := range lister.Keys() {
			_ = c.kv.Purge(ctx, key)
		}
	}
	c.mu.Lock()
	delete(c.open, device)
	c.mu.Unlock()
}
