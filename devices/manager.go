package devices

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// ManagerConfig configures device management beyond the registry.
type ManagerConfig struct {
	// Replicas of the KV buckets (default 1).
	Replicas int             `yaml:"replicas" json:"replicas"`
	Liveness LivenessConfig  `yaml:"liveness" json:"liveness"`
	RD       DirectoryConfig `yaml:"rd" json:"rd"`
	Scan     DiscoveryConfig `yaml:"discovery" json:"discovery"`
}

// Manager is device management: the registry (embedded, so it serves wherever the registry
// does) plus per-type settings, liveness, shadows, commands, provisioning, the CoRE Resource
// Directory and discovered devices. It implements the presence callbacks of both protocol
// adapters (Connected, Disconnected, Seen) and their optional capabilities (Subscribed,
// Delivered for commands; provisioning; the resource directory).
type Manager struct {
	*Registry
	Types        *Types
	Liveness     *Liveness
	Shadows      *Shadows
	Commands     *Commands
	Provisioning *Provisioning
	Directory    *Directory
	Discovery    *Discovery
	log          *slog.Logger
}

// NewManager opens (or creates) the buckets of device management on js. pub stores the
// messages the hub makes (status events, desired states, commands).
func NewManager(ctx context.Context, js jetstream.JetStream, reg *Registry, pub Publisher, cfg ManagerConfig, log *slog.Logger) (*Manager, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	log = log.With("component", "devices")
	m := &Manager{Registry: reg, log: log}
	var err error
	if m.Types, err = newTypes(ctx, js, cfg.Replicas, log); err != nil {
		return nil, err
	}
	if m.Liveness, err = newLiveness(ctx, js, reg, m.Types, pub, cfg.Liveness, cfg.Replicas, log); err != nil {
		return nil, err
	}
	if m.Shadows, err = newShadows(ctx, js, reg, pub, cfg.Replicas, log); err != nil {
		return nil, err
	}
	if m.Commands, err = newCommands(ctx, js, reg, pub, cfg.Replicas, log); err != nil {
		return nil, err
	}
	if m.Provisioning, err = newProvisioning(ctx, js, reg, cfg.Replicas, log); err != nil {
		return nil, err
	}
	if m.Directory, err = newDirectory(ctx, js, cfg.RD, cfg.Replicas, log); err != nil {
		return nil, err
	}
	if m.Discovery, err = newDiscovery(ctx, js, reg, cfg.Scan, cfg.Replicas, log); err != nil {
		return nil, err
	}
	return m, nil
}

// Run keeps every part current and runs their consumers and sweepers until ctx ends. The
// registry's own Run is separate (the hub runs both).
func (m *Manager) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.Types.run(gctx) })
	g.Go(func() error { return m.Liveness.Run(gctx) })
	g.Go(func() error { return m.Shadows.run(gctx) })
	g.Go(func() error { return m.Commands.run(gctx) })
	g.Go(func() error { return m.Directory.run(gctx) })
	g.Go(func() error { return m.Discovery.run(gctx) })
	if err := g.Wait(); err != nil {
		return fmt.Errorf("devices: %w", err)
	}
	return nil
}

// Connected, Disconnected (MQTT) and Seen (CoAP) feed liveness.
func (m *Manager) Connected(id, protocol, remote string) { m.Liveness.Connected(id, protocol, remote) }
func (m *Manager) Disconnected(id, protocol string)      { m.Liveness.Disconnected(id, protocol) }
func (m *Manager) Seen(id, protocol, remote string)      { m.Liveness.Seen(id, protocol, remote) }

// Subscribed and Delivered feed commands.
func (m *Manager) Subscribed(device, filter string)         { m.Commands.Subscribed(device, filter) }
func (m *Manager) Delivered(device, topic string, b []byte) { m.Commands.Delivered(device, topic, b) }

// Presence is device id's liveness.
func (m *Manager) Presence(id string) Presence { return m.Liveness.Presence(id) }

// StatusSet returns the IDs of online (or of known offline) devices; see Liveness.Online.
func (m *Manager) StatusSet(online bool) map[string]bool { return m.Liveness.Online(online) }

// ProvisionCheck tells whether key may create device id now (the MQTT adapter asks at
// CONNECT, before the client subscribes for its token).
func (m *Manager) ProvisionCheck(ctx context.Context, key, id string) error {
	return m.Provisioning.Check(ctx, key, id)
}

// Provision creates device id with provisioning key key and returns its token.
func (m *Manager) Provision(ctx context.Context, key, id string) (string, error) {
	_, token, err := m.Provisioning.Claim(ctx, key, id)
	return token, err
}

// Delete removes device id and everything kept about it: status (announcing it offline if it
// was online), shadow and commands.
func (m *Manager) Delete(ctx context.Context, id string) error {
	if err := m.Registry.Delete(ctx, id); err != nil {
		return err
	}
	m.Liveness.forget(ctx, id)
	m.Shadows.forget(ctx, id)
	m.Commands.forget(ctx, id)
	return nil
}

// RD is the CoRE Resource Directory (the CoAP adapter serves it when its Presence has this).
func (m *Manager) RD() *Directory { return m.Directory }
