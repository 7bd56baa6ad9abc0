package sse

import (
	"context"
	"io"
	"net"
	"testing"
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

	hub := NewHub(HubConfig{})
	hub.Start(0)
	sub := mustSubscribe(t, hub, "videos/a")
	st := &stream{h: NewHandler(hub, nil, HandlerConfig{}), sub: sub, ctx: context.Background(),
		conn: &takenOver{conn: server, raw: raw}, wheelSlot: -1}
	ev := statusEvent(1, "a")
	f, err := encodeEvent(&ev)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{vw: newVectorWriter()}
	deliver := func() {
		f.id++
		sub.queue.push(f)
		if !w.write(st) {
			t.Fatal("stream resumed: the socket refused a small write")
		}
	}
	deliver() // the queue's and the writer's storage
	if n := testing.AllocsPerRun(1000, deliver); n != 0 {
		t.Errorf("%v allocations per delivery, want 0", n)
	}
}
