package stream

import (
	"context"
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"pgsse/event"
	"pgsse/hub"
)

// TestWriter_DeliveryAllocs: a live event reaching a parked stream — queued by
// the hub, written by a writer in one writev — allocates nothing.
func TestWriter_DeliveryAllocs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.Copy(io.Discard, client)
	}()
	defer func() { server.Close(); client.Close(); <-drained }()
	raw, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}

	events := make([]event.Event, 5000)
	for i := range events {
		events[i] = event.Event{ID: int64(i + 1), Kind: event.KindVideoStatus, Topic: "videos/a", Time: time.Unix(0, 0),
			Data: &event.VideoStatus{VideoID: "a", Status: "processed"}}
	}
	topics := []event.Topic{mustTopic(t, "videos/a")}
	// The same publish with one subscriber, with and without the writer: the
	// difference is the delivery's. No collection meanwhile: it would empty the
	// encoder's pools and count their refill on one side only.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	published := func(write bool) float64 {
		h := hub.NewHub(hub.HubConfig{})
		h.Start(0)
		defer h.Close()
		sub, err := h.Subscribe(topics, nil)
		if err != nil {
			t.Fatal(err)
		}
		st := &stream{h: NewHandler(h, nil, HandlerConfig{}), sub: sub, ctx: context.Background(),
			conn: &takenOver{conn: server, raw: raw}, wheelSlot: -1}
		w := &writer{vw: newVectorWriter()}
		next := 0
		deliver := func() {
			h.Publish(events[next : next+1])
			next++
			if !write {
				w.frames = sub.Take(w.frames[:0]) // what the writer would take
				clear(w.frames)
				return
			}
			if !w.write(st) {
				t.Fatal("stream resumed: the socket refused a small write")
			}
		}
		deliver() // the queue's and the writer's storage
		return mallocsPer(2000, deliver)
	}
	// Fractional averages: the publish alone varies by a fraction of an
	// allocation; a writer allocating would add one per delivery.
	if with, without := published(true), published(false); with-without > 0.5 {
		t.Errorf("%.2f allocations per delivery with the writer, %.2f without; want none added", with, without)
	}
}

// mallocsPer returns the average number of allocations of n calls of fn.
func mallocsPer(n int, fn func()) float64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		fn()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}

func mustTopic(t *testing.T, s string) event.Topic {
	t.Helper()
	topic, err := event.ParseTopic(s)
	if err != nil {
		t.Fatal(err)
	}
	return topic
}
