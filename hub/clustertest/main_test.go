package clustertest

import (
	"fmt"
	"os"
	"testing"

	"github.com/tributary-iot/tributary/hub/hubproc"
	"github.com/tributary-iot/tributary/hub/hubtest"
	"github.com/tributary-iot/tributary/tsdb/influxtest"
)

// TestMain doubles as the hub child process: hubproc.Start re-executes this test binary,
// which then serves a hub instead of running tests (so a hub can die by SIGKILL alone).
func TestMain(m *testing.M) {
	if hubproc.IsChild() {
		if err := hubproc.Serve(hubproc.Options{APIKey: hubtest.APIKey}); err != nil {
			fmt.Fprintln(os.Stderr, "hub child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(influxtest.Main(m))
}
