// Command hubbench is the whole-system benchmark: it starts a real hubd in a child process (so
// its memory is measured alone), drives it with real MQTT and CoAP clients, and prints ingest
// rates, latency percentiles, the JetStream storage ceiling and memory per idle connection.
//
//	go run ./cmd/hubbench            # everything, ~2 minutes
//	go run ./cmd/hubbench -quick     # smaller counts, for a smoke test
//	go run ./cmd/hubbench failover   # rule failover times after kill -9 of its owner
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tributary-iot/tributary/hub/hubproc"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "failover" { // go run ./cmd/hubbench failover: see failover.go
		failoverMain(os.Args[2:])
		return
	}
	serve := flag.Bool("serve", false, "internal: run the hub and print its addresses (used by the child process)")
	quick := flag.Bool("quick", false, "smaller message and connection counts")
	only := flag.String("only", "", "comma-separated subset: ceiling,qos0,qos1,coap,latency,idle; or cluster (1-3 hubs on a NATS cluster)")
	jsonOut := flag.Bool("json", false, "print the report as JSON")
	flag.Parse()
	if *serve {
		if err := hubproc.Serve(hubproc.Options{APIKey: "hubbench-key", CPUProfile: os.Getenv("HUBBENCH_CPUPROFILE")}); err != nil {
			fmt.Fprintln(os.Stderr, "hubbench serve:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *only == "cluster" { // 1, 2 and 3 hubs on a 3-node NATS cluster: see cluster.go
		if err := clusterMain(ctx, *quick, *jsonOut); err != nil {
			fmt.Fprintln(os.Stderr, "hubbench cluster:", err)
			os.Exit(1)
		}
		return
	}
	p := fullParams()
	if *quick {
		p = quickParams()
	}
	rep, err := run(ctx, p, *only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hubbench:", err)
		os.Exit(1)
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return
	}
	rep.print(os.Stdout)
}
