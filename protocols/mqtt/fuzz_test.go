package mqtt_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/protocols/admission"
	"github.com/tributary-iot/tributary/protocols/mqtt"
)

// connectPacket encodes a CONNECT.
func connectPacket(version byte, clientID, user, pass string) []byte {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30,
			ClientIdentifier: clientID, UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass),
		},
	}
	if version == 3 {
		pk.Connect.ProtocolName = []byte("MQIsdp")
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// FuzzConnect writes arbitrary bytes as the first packet of a TCP connection to a broker with
// admission control (failed authentication throttled after 3 failures for 50ms), then checks
// that the broker still admits a device with the right token from another address. Seeds in
// testdata/fuzz/FuzzConnect: CONNECTs of MQTT 3.1, 3.1.1 and 5 with long usernames and
// passwords, invalid UTF-8, truncations and wrong lengths.
func FuzzConnect(f *testing.F) {
	ctl, err := admission.New(admission.Config{AuthMaxFailures: 3, AuthWindow: 50 * time.Millisecond}, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	h := startHubWith(f, mqtt.Config{ConnectTimeout: time.Second}, nil, func(s *mqtt.Server) { s.SetAdmission(ctl) })
	addr := h.srv.Addr()
	valid := connectPacket(4, "d1", "d1", h.tokens["d1"])
	f.Add(valid)
	f.Add(connectPacket(5, "x", "d1", "wrong"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
		conn, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(200 * time.Millisecond))
		conn.Write(data)
		conn.(*net.TCPConn).CloseWrite() // the broker reads EOF after the input and hangs up
		io.Copy(io.Discard, io.LimitReader(conn, 1<<16))
		conn.Close()

		// The broker still serves: the right token from another address is admitted.
		ok, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("broker gone after input %q: %v", data, err)
		}
		defer ok.Close()
		ok.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := ok.Write(valid); err != nil {
			t.Fatal(err)
		}
		ack := make([]byte, 4)
		if _, err := io.ReadFull(ok, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			t.Fatalf("after input %q: CONNACK % x, %v; want return code 0", data, ack, err)
		}
	})
}
