package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/tributary-iot/tributary/hub"
)

const benchAPIKey = "hubbench-key"

// serveHub is the child process: a hub on free loopback ports whose addresses go to stdout as
// one JSON line.
func serveHub() error {
	raiseFileLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if path := os.Getenv("HUBBENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	dir := os.Getenv("HUBBENCH_DIR")
	if dir == "" {
		return errors.New("HUBBENCH_DIR not set")
	}
	cfg := hub.Defaults()
	cfg.DataDir = dir
	cfg.HTTPAddr, cfg.MQTTAddr, cfg.CoAPAddr, cfg.NATSAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.MQTTWSAddr, cfg.CoAPSAddr = "", ""
	cfg.APIKey = benchAPIKey
	cfg.LogLevel = "error"
	h, err := hub.New(ctx, cfg, quietLogger())
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- h.Run(ctx) }()
	select {
	case <-h.Ready():
	case err := <-errc:
		return err
	}
	json.NewEncoder(os.Stdout).Encode(addrs{HTTP: h.HTTPAddr(), MQTT: h.MQTTAddr(), CoAP: h.CoAPAddr(), NATS: h.NATSURL(), APIKey: h.APIKey()})
	return <-errc
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
