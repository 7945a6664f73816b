package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tributary-iot/tributary/hub"
	"github.com/tributary-iot/tributary/streams/natscluster"
)

// devClusterOptions are the flags of `hubctl dev cluster`.
type devClusterOptions struct {
	Dir  string
	Hubs int
	// NATSPort is node 1's client port (nodes n2, n3 take the next ones; routes +2000,
	// monitoring +4000). HTTPPort, MQTTPort and CoAPPort are hub 1's; hub i adds (i-1)*Step.
	// A port of 0 picks free ports.
	NATSPort, HTTPPort, MQTTPort, CoAPPort, Step int
	APIKey                                       string
	InfluxURL, InfluxOrg, InfluxToken, Bucket    string
	LogLevel                                     string
}

// devCluster is 3 NATS nodes and some hubs on loopback, in this process.
type devCluster struct {
	opts   devClusterOptions
	nats   *natscluster.Cluster
	hubs   []*hub.Hub
	done   []chan error
	cancel context.CancelFunc
}

// devClusterCmd is `hubctl dev cluster`: it runs until SIGINT or SIGTERM.
func (c *cli) devClusterCmd(args []string) error {
	o := devClusterOptions{}
	fs := c.flags("dev cluster")
	fs.StringVar(&o.Dir, "dir", "./devcluster", "data of the NATS nodes and hubs (kept across runs)")
	fs.IntVar(&o.Hubs, "hubs", 2, "number of hubs")
	fs.IntVar(&o.NATSPort, "nats-port", 4222, "client port of NATS node 1 (nodes 2, 3: the next ports; 0: free ports)")
	fs.IntVar(&o.HTTPPort, "http-port", 8080, "HTTP port of hub 1 (0: free ports)")
	fs.IntVar(&o.MQTTPort, "mqtt-port", 1883, "MQTT port of hub 1 (0: free ports)")
	fs.IntVar(&o.CoAPPort, "coap-port", 5683, "CoAP port of hub 1 (0: free ports)")
	fs.IntVar(&o.Step, "port-step", 100, "added to every port for each further hub")
	fs.StringVar(&o.InfluxURL, "influx-url", "", "InfluxDB for every hub (empty: none)")
	fs.StringVar(&o.InfluxOrg, "influx-org", "", "InfluxDB organization")
	fs.StringVar(&o.InfluxToken, "influx-token", "", "InfluxDB token")
	fs.StringVar(&o.Bucket, "influx-bucket", "iot", "InfluxDB bucket")
	fs.StringVar(&o.LogLevel, "log-level", "warn", "hub log level")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErrorf("dev cluster: unexpected argument %q", pos[0])
	}
	o.APIKey = c.apiKey // --api-key: the admin key of every hub (default: generated, kept in --dir)
	if o.Hubs < 1 || o.Hubs > 9 {
		return usageErrorf("dev cluster: --hubs must be 1..9, got %d", o.Hubs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := startDevCluster(ctx, o, slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: parseLevel(o.LogLevel)})))
	if err != nil {
		return err
	}
	d.describe(c.stdout)
	err = d.wait(ctx)
	fmt.Fprintln(c.stderr, "stopping the dev cluster...")
	if serr := d.stop(); err == nil {
		err = serr
	}
	return err
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if l.UnmarshalText([]byte(s)) != nil {
		return slog.LevelWarn
	}
	return l
}

// startDevCluster starts the NATS nodes, then the hubs, and returns once every hub is ready.
func startDevCluster(ctx context.Context, o devClusterOptions, log *slog.Logger) (_ *devCluster, err error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if o.APIKey == "" {
		if o.APIKey, err = devAPIKey(o.Dir); err != nil {
			return nil, err
		}
	}
	nopts := natscluster.Options{Nodes: 3, Dir: filepath.Join(o.Dir, "nats")}
	if o.NATSPort != 0 {
		for i := range 3 {
			nopts.ClientPorts = append(nopts.ClientPorts, o.NATSPort+i)
			nopts.RoutePorts = append(nopts.RoutePorts, o.NATSPort+2000+i)
			nopts.MonitorPorts = append(nopts.MonitorPorts, o.NATSPort+4000+i)
		}
	}
	d := &devCluster{opts: o}
	if d.nats, err = natscluster.Start(nopts); err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	defer func() {
		if err != nil {
			d.stop()
		}
	}()
	addr := func(base, i int) string {
		if base == 0 {
			return "127.0.0.1:0"
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i*o.Step))
	}
	for i := range o.Hubs {
		cfg := hub.Defaults()
		cfg.DataDir = filepath.Join(o.Dir, fmt.Sprintf("hub%d", i+1))
		cfg.NATSURL, cfg.NATSAddr = d.nats.URL(), ""
		cfg.HTTPAddr, cfg.MQTTAddr, cfg.CoAPAddr = addr(o.HTTPPort, i), addr(o.MQTTPort, i), addr(o.CoAPPort, i)
		cfg.MQTTWSAddr, cfg.CoAPSAddr = "", ""
		cfg.APIKey = o.APIKey
		cfg.InfluxURL, cfg.InfluxOrg, cfg.InfluxToken, cfg.InfluxBucket = o.InfluxURL, o.InfluxOrg, o.InfluxToken, o.Bucket
		h, err := hub.New(hctx, cfg, log.With("hub", i+1))
		if err != nil {
			return nil, fmt.Errorf("hub %d: %w", i+1, err)
		}
		done := make(chan error, 1)
		go func() { done <- h.Run(hctx) }()
		select {
		case <-h.Ready():
		case err := <-done:
			return nil, fmt.Errorf("hub %d stopped while starting: %v", i+1, err)
		case <-time.After(60 * time.Second):
			return nil, fmt.Errorf("hub %d not ready after 60s", i+1)
		}
		d.hubs, d.done = append(d.hubs, h), append(d.done, done)
	}
	return d, nil
}

// devAPIKey is the key kept in dir/api-key, created on first use.
func devAPIKey(dir string) (string, error) {
	path := filepath.Join(dir, "api-key")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 16)
	rand.Read(b)
	key := "tb_dev_" + hex.EncodeToString(b)
	return key, os.WriteFile(path, []byte(key+"\n"), 0o600)
}

// wait returns when ctx ends (nil) or a hub stops on its own (its error).
func (d *devCluster) wait(ctx context.Context) error {
	errc := make(chan error, len(d.done))
	for i, done := range d.done {
		go func() {
			err := <-done
			done <- err // stop reads it again
			errc <- fmt.Errorf("hub %d stopped: %v", i+1, err)
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// stop stops the hubs, then the NATS nodes.
func (d *devCluster) stop() error {
	d.cancel()
	var errs []error
	for i, done := range d.done {
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("hub %d: %w", i+1, err))
			}
		case <-time.After(30 * time.Second):
			errs = append(errs, fmt.Errorf("hub %d did not stop within 30s", i+1))
		}
	}
	d.nats.Close()
	return errors.Join(errs...)
}

func (d *devCluster) describe(w io.Writer) {
	fmt.Fprintf(w, "Tributary dev cluster: 3 NATS nodes, %d hubs, data in %s. Ctrl-C stops it.\n\n", len(d.hubs), d.opts.Dir)
	for i := range d.nats.Len() {
		fmt.Fprintf(w, "  nats %s  %s\n", d.nats.Name(i), d.nats.ClientURL(i))
	}
	for i, h := range d.hubs {
		fmt.Fprintf(w, "  hub %d   http://%s  mqtt %s  coap %s\n", i+1, h.HTTPAddr(), h.MQTTAddr(), h.CoAPAddr())
	}
	fmt.Fprintf(w, "\n  --nats-url %s   (streams and KV buckets: 3 replicas)\n", d.nats.URL())
	fmt.Fprintf(w, "  API key: %s\n\nTry:\n", d.hubs[0].APIKey())
	fmt.Fprintf(w, "  export HUB_URL=http://%s HUB_API_KEY=%s\n", d.hubs[0].HTTPAddr(), d.hubs[0].APIKey())
	fmt.Fprintf(w, "  hubctl devices create d1                          # prints the device token\n")
	fmt.Fprintf(w, "  hubctl tail 'devices/+/telemetry' --server http://%s\n", d.hubs[len(d.hubs)-1].HTTPAddr())
	host, port, _ := net.SplitHostPort(d.hubs[0].MQTTAddr())
	fmt.Fprintf(w, "  mosquitto_pub -h %s -p %s -u d1 -P <token> -q 1 -t devices/d1/telemetry -m '{\"t\":21.5}'\n", host, port)
}
