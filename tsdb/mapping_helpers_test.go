package tsdb

import (
	"bytes"
	"testing"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
	lp "github.com/influxdata/line-protocol"
)

func lineOf(t *testing.T, p *write.Point) string {
	t.Helper()
	var buf bytes.Buffer
	enc := lp.NewEncoder(&buf)
	enc.FailOnFieldErr(true)
	enc.SetPrecision(time.Nanosecond)
	if _, err := enc.Encode(p); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.String()
}
