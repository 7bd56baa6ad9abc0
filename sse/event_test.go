package sse

import (
	"bytes"
	"strings"
	"testing"
	"time"

	gosse "github.com/tmaxmax/go-sse"

	"pgsse/event"
)

func TestMessage_AppendTo(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  Message
		want string
	}{
		{"Full", Message{ID: IntID(42), Type: MustEventType("video.status"), Data: []byte(`{"a":1}`)},
			"id: 42\nevent: video.status\ndata: {\"a\":1}\n\n"},
		{"RetryOnly", Message{Retry: 2500 * time.Millisecond}, "retry: 2500\n\n"},
		{"NoID", Message{Type: MustEventType("stream.reset"), Data: []byte("x")}, "event: stream.reset\ndata: x\n\n"},
		{"EmptyData", Message{Data: []byte{}}, "data: \n\n"},
		{"LF", Message{Data: []byte("a\nb")}, "data: a\ndata: b\n\n"},
		{"CR", Message{Data: []byte("a\rb")}, "data: a\ndata: b\n\n"},
		{"CRLF", Message{Data: []byte("a\r\nb")}, "data: a\ndata: b\n\n"},
		{"LFCR", Message{Data: []byte("a\n\rb")}, "data: a\ndata: \ndata: b\n\n"},
		{"TrailingNewline", Message{Data: []byte("a\n")}, "data: a\ndata: \n\n"},
		{"LeadingSpaceKept", Message{Data: []byte(" a")}, "data:  a\n\n"},
		{"ColonInData", Message{Data: []byte(": not a comment")}, "data: : not a comment\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.msg.AppendTo(nil)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewEventType(t *testing.T) {
	for _, bad := range []string{"", "1\n2", "1\r", "a\x00b"} {
		if _, err := newEventType(bad); err == nil {
			t.Errorf("newEventType(%q) accepted", bad)
		}
	}
	if typ, err := newEventType("video.status"); err != nil || typ != MustEventType("video.status") {
		t.Errorf("newEventType(video.status) = %v, %v", typ, err)
	}
}

// FuzzMessage_AppendTo: whatever the data, a WHATWG parser (go-sse's, written
// independently of this encoder) reads back one event with the same id, type
// and data, with line breaks normalised to LF as the standard says.
func FuzzMessage_AppendTo(f *testing.F) {
	for _, seed := range []string{"", "plain", "a\nb", "a\rb", "a\r\nb", "\n", "\r\n\r\n", "\x00", "é€😀", "data: x", ":comment", "\n\n\n", " lead", "trail\r"} {
		f.Add(seed, "video.status", int64(7))
	}
	f.Fuzz(func(t *testing.T, data, typ string, id int64) {
		if id < 0 {
			id = -id
		}
		et, err := newEventType(typ)
		if err != nil {
			t.Skip()
		}
		msg := Message{ID: IntID(id), Type: et, Data: []byte(data)}
		wire := msg.AppendTo(nil)
		var got []gosse.Event
		for ev, err := range gosse.Read(bytes.NewReader(wire), &gosse.ReadConfig{MaxEventSize: len(wire) + 1}) {
			if err != nil {
				t.Fatalf("parse %q: %v", wire, err)
			}
			got = append(got, ev)
		}
		want := strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\r", "\n")
		if len(got) != 1 {
			t.Fatalf("parsed %d events from %q, want 1", len(got), wire)
		}
		if got[0].Data != want || got[0].Type != typ || got[0].LastEventID != IntID(id).s {
			t.Fatalf("round trip of %q: got %+v, want data %q type %q id %d", wire, got[0], want, typ, id)
		}
	})
}

func BenchmarkMessage_AppendTo(b *testing.B) {
	data := []byte(`{"id":42,"kind":"video.status","topic":"videos/abc123","time":"2026-12-01T19:03:58.976573Z","data":{"video_id":"abc123","status":"processed","previous_status":"pending"}}`)
	m := Message{ID: IntID(42), Type: MustEventType("video.status"), Data: data}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = m.AppendTo(buf[:0])
	}
}

func TestMessage_AppendToAllocs(t *testing.T) {
	m := Message{ID: IntID(42), Type: MustEventType("video.status"), Data: []byte("line one\nline two")}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { buf = m.AppendTo(buf[:0]) }); n != 0 {
		t.Errorf("AppendTo into a large enough buffer allocates %v times", n)
	}
}

func BenchmarkEncodeEvent(b *testing.B) {
	ev := event.Event{ID: 42, Kind: event.KindVideoStatus, Topic: "videos/abc123", Time: time.Unix(0, 0),
		Data: &event.VideoStatus{VideoID: "abc123", Status: "processed"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(&ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHub_Backlog: a resume served from memory, scanning a full history
// for one subscriber's topic.
