package streams_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tributary-iot/tributary/streams"
	"github.com/tributary-iot/tributary/streams/streamstest"
)

// A hub started before its external NATS server waits for it instead of failing.
func TestNewWaitsForAStartingServer(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	started := make(chan *server.Server, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond) // the hub starts first
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
		if err != nil {
			t.Error(err)
			started <- nil
			return
		}
		ns.Start()
		started <- ns
	}()
	defer func() {
		if ns := <-started; ns != nil {
			ns.Shutdown()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	b, err := streams.New(ctx, streams.Config{URL: "nats://127.0.0.1:" + strconv.Itoa(port)}, streamstest.Logger(t))
	if err != nil {
		t.Fatalf("New before the server started: %v", err)
	}
	defer b.Close()
	if waited := time.Since(begin); waited < time.Second {
		t.Errorf("connected after %s, before the server started", waited)
	}
}
