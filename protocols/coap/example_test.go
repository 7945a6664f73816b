package coap_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"

	"github.com/tributary-iot/tributary/protocols"
	"github.com/tributary-iot/tributary/protocols/coap"
	"github.com/tributary-iot/tributary/streams"
)

// Example wires the adapter the way the hub does: the bus is the Subscriber, the shared
// ingest pipeline the Ingester, and auth (device registry plus API key) the Authenticator,
// which must also be a coap.PSKStore for DTLS.
func Example() {
	var (
		bus  *streams.Bus            // streams.New(...)
		auth protocols.Authenticator // registry + API key; also a coap.PSKStore
		log  = slog.New(slog.NewTextHandler(os.Stderr, nil))
	)
	if bus == nil || auth == nil {
		return // (a sketch: see the hub for the real wiring)
	}
	ingest := protocols.NewIngest(bus, 0, log)
	srv, err := coap.New(coap.Config{Addr: ":5683", DTLSAddr: ":5684"}, ingest, auth, bus, nil, log)
	if err != nil {
		log.Error("coap", "err", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-srv.Ready()
		log.Info("coap up", "udp", srv.Addr(), "dtls", srv.DTLSAddr())
	}()
	if err := srv.Run(ctx); err != nil {
		log.Error("coap", "err", err)
	}
}

// ExamplePSKFromToken: a device's DTLS key is the hex SHA-256 of its token.
func ExamplePSKFromToken() {
	psk := coap.PSKFromToken("secret")
	os.Stdout.Write(append(psk, '\n'))
	// Output: 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b
}
