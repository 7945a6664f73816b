package tsdb

import (
	"errors"
	"testing"
	"time"

	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/streams"
)

type lookup map[string]devices.Device

func (l lookup) Get(id string) (devices.Device, error) {
	if d, ok := l[id]; ok {
		return d, nil
	}
	return devices.Device{}, devices.ErrNotFound
}

func TestTelemetryMapperIsDeterministic(t *testing.T) {
	at := time.Date(2024, 1, 1, 0, 0, 0, 123, time.UTC)
	env := &streams.Envelope{DeviceID: "d1", Topic: "devices/d1/telemetry", EventTime: at, ContentType: "application/json",
		Payload: []byte(`{"t": 21, "ok": true, "s": "x", "time": 1, "a": {"b": 2}}`)}
	m := TelemetryMapper(lookup{"d1": {ID: "d1", Type: "thermo", Tags: map[string]string{"site": "b", "empty": ""}}}, "telemetry")
	var lines []string
	for range 3 {
		pts, err := m(env)
		if err != nil || len(pts) != 1 {
			t.Fatalf("got %v, %v, want one point", pts, err)
		}
		lines = append(lines, lineOf(t, pts[0]))
	}
	want := "telemetry,device=d1,tag_site=b,type=thermo a.b=2,ok=true,s=\"x\",t=21,time_=1 1704067200000000123\n"
	for _, l := range lines {
		if l != want {
			t.Errorf("got line %q, want %q", l, want)
		}
	}
}

func TestDecodeSamplesTimes(t *testing.T) {
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	received := at.Add(time.Minute)
	for _, tc := range []struct {
		name    string
		env     streams.Envelope
		want    []time.Time
		wantErr bool
	}{
		{"no device time: event time", streams.Envelope{EventTime: at, Payload: []byte(`{"a":1}`)}, []time.Time{at}, false},
		{"no event time: received", streams.Envelope{ReceivedAt: received, Payload: []byte(`{"a":1}`)}, []time.Time{received}, false},
		{"device ts: the event time stands for it", streams.Envelope{EventTime: at, Payload: []byte(`{"a":1,"ts":1700000000000}`)}, []time.Time{at}, false},
		{"senml relative times keep offsets", streams.Envelope{EventTime: at, ContentType: "application/senml+json",
			Payload: []byte(`[{"n":"a","v":1,"t":-10},{"n":"a","v":2,"t":-5}]`)}, []time.Time{at, at.Add(5 * time.Second)}, false},
		{"no time at all", streams.Envelope{Payload: []byte(`{"a":1}`)}, nil, true},
		{"not telemetry", streams.Envelope{EventTime: at, Payload: []byte(`[1,2]`)}, nil, true},
	} {
		got, err := DecodeSamples(&tc.env)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: got error %v, want error %v", tc.name, err, tc.wantErr)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %d samples, want %d", tc.name, len(got), len(tc.want))
			continue
		}
		for i := range got {
			if !got[i].Time.Equal(tc.want[i]) {
				t.Errorf("%s: sample %d at %v, want %v", tc.name, i, got[i].Time, tc.want[i])
			}
		}
	}
}

func TestRejection(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&ihttp.Error{StatusCode: 400, Message: `partial write: field type conflict: input field "v"`}, true},
		{&ihttp.Error{StatusCode: 400, Message: `unable to parse 'x': bad timestamp`}, true},
		{&ihttp.Error{StatusCode: 422, Message: `failure writing points to database: partial write: field type conflict`}, true},
		{&ihttp.Error{StatusCode: 413, Message: `Request Entity Too Large`}, true},
		{&ihttp.Error{StatusCode: 400, Message: `organization name "x" not found`}, false},
		{&ihttp.Error{StatusCode: 404, Message: `database not found: "db"`}, false},
		{&ihttp.Error{StatusCode: 401, Message: `unauthorized`}, false},
		{&ihttp.Error{StatusCode: 503}, false},
		{ihttp.NewError(errors.New("connection refused")), false},
		{errors.New("other"), false},
	} {
		if _, got := rejection(tc.err); got != tc.want {
			t.Errorf("rejection(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestConsumerNameIsStable(t *testing.T) {
	a := consumerName(Config{URL: "http://influx:8086/", Bucket: "iot"}, TelemetrySubject)
	b := consumerName(Config{URL: "http://influx:8086", Bucket: "iot", Token: "changed"}, TelemetrySubject)
	c := consumerName(Config{URL: "http://influx:8086", Bucket: "other"}, TelemetrySubject)
	d := consumerName(Config{URL: "http://influx:8086", Bucket: "iot"}, "iot.results.>")
	if a != b || a == c || a == d || len(a) > 31 {
		t.Errorf("got names %q %q %q %q: want equal for the same InfluxDB and bucket, distinct otherwise, < 32 chars", a, b, c, d)
	}
}
