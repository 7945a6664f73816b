package mqtt_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/protocols/mqtt"
	"github.com/tributary-iot/tributary/streams"
)

// The hub wires the adapter to the bus (storage and fan-out), the ingest pipeline and an
// Authenticator combining the device registry with the API keys.
func ExampleNew() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.Default()

	bus, err := streams.New(ctx, streams.Config{StoreDir: "./data/jetstream"}, log)
	if err != nil {
		log.Error("streams", "err", err)
		return
	}
	defer bus.Close()
	reg, err := devices.New(ctx, bus.JetStream(), devices.Config{}, log)
	if err != nil {
		log.Error("devices", "err", err)
		return
	}
	in := protocols.NewIngest(bus, 0, log)

	srv, err := mqtt.New(mqtt.Config{Addr: ":1883", WSAddr: ":8083"}, in, creds{reg: reg, key: os.Getenv("HUB_API_KEY")}, bus, nil, log)
	if err != nil {
		log.Error("mqtt", "err", err)
		return
	}
	go func() {
		<-srv.Ready()
		log.Info("mqtt ready", "addr", srv.Addr(), "ws", srv.WSAddr())
	}()
	if err := srv.Run(ctx); err != nil { // until interrupted
		log.Error("mqtt", "err", err)
	}
}
