package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"pgsse/event"
	"pgsse/sse"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func topics(t testing.TB, names ...string) []event.Topic {
	t.Helper()
	var out []event.Topic
	for _, n := range names {
		topic, err := event.ParseTopic(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, topic)
	}
	return out
}

func statusEvent(id int64, video string) event.Event {
	return event.Event{ID: id, Kind: event.KindVideoStatus, Topic: "videos/" + video, Time: time.Unix(0, 0),
		Data: &event.VideoStatus{VideoID: video, Status: "processed"}}
}

func queued(s *Subscriber) []int64 {
	var ids []int64
	for _, f := range s.queue.take(nil) {
		ids = append(ids, f.ID)
	}
	return ids
}

func mustSubscribe(t testing.TB, h *Hub, names ...string) *Subscriber {
	t.Helper()
	s, err := h.Subscribe(topics(t, names...), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHub_Publish(t *testing.T) {
	t.Run("ByTopic", func(t *testing.T) {
		h := NewHub(HubConfig{})
		h.Start(10)
		a := mustSubscribe(t, h, "videos/a")
		b := mustSubscribe(t, h, "videos/b")
		all := mustSubscribe(t, h, "videos/*", "videos/a") // overlapping: once each
		h.Publish([]event.Event{statusEvent(11, "a"), statusEvent(12, "b"), statusEvent(13, "a")})
		if got, want := fmt.Sprint(queued(a)), "[11 13]"; got != want {
			t.Errorf("a got %s, want %s", got, want)
		}
		if got, want := fmt.Sprint(queued(b)), "[12]"; got != want {
			t.Errorf("b got %s, want %s", got, want)
		}
		if got, want := fmt.Sprint(queued(all)), "[11 12 13]"; got != want {
			t.Errorf("wildcard got %s, want %s", got, want)
		}
	})

	t.Run("EncodedOnce", func(t *testing.T) {
		h := NewHub(HubConfig{})
		h.Start(0)
		a, b := mustSubscribe(t, h, "videos/a"), mustSubscribe(t, h, "videos/*")
		h.Publish([]event.Event{statusEvent(1, "a")})
		fa, fb := a.queue.take(nil)[0], b.queue.take(nil)[0]
		if fa != fb {
			t.Error("subscribers got different frames for one event")
		}
		want := `id: 1` + "\n" + `event: video.status` + "\n" + `data: {"id":1,"kind":"video.status","topic":"videos/a","time":"1970-01-01T00:00:00.000000Z","data":{"video_id":"a","status":"processed","previous_status":null}}` + "\n\n"
		if string(fa.Wire) != want {
			t.Errorf("wire = %q, want %q", fa.Wire, want)
		}
	})

	t.Run("OldEventsIgnored", func(t *testing.T) {
		h := NewHub(HubConfig{})
		h.Start(10)
		s := mustSubscribe(t, h, "videos/a")
		h.Publish([]event.Event{statusEvent(9, "a"), statusEvent(10, "a"), statusEvent(11, "a")})
		if got, want := fmt.Sprint(queued(s)), "[11]"; got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	})

	t.Run("SlowSubscriber", func(t *testing.T) {
		h := NewHub(HubConfig{QueueLen: 4})
		h.Start(0)
		slow, fast := mustSubscribe(t, h, "videos/a"), mustSubscribe(t, h, "videos/a")
		for id := int64(1); id <= 6; id++ {
			h.Publish([]event.Event{statusEvent(id, "a")})
			queued(fast) // fast keeps up
		}
		select {
		case <-slow.Done():
			if slow.Reason() != EndOverflow {
				t.Errorf("reason = %s, want %s", slow.Reason(), EndOverflow)
			}
		default:
			t.Fatal("overflowing subscriber not ended")
		}
		select {
		case <-fast.Done():
			t.Fatal("subscriber that keeps up was ended")
		default:
		}
		if h.Len() != 1 {
			t.Errorf("hub holds %d subscribers, want 1", h.Len())
		}
	})
}

func TestHub_Backlog(t *testing.T) {
	h := NewHub(HubConfig{HistoryLen: 4})
	h.Start(0)
	for id := int64(1); id <= 6; id++ {
		h.Publish([]event.Event{statusEvent(id, []string{"a", "b"}[id%2])})
	}
	s := mustSubscribe(t, h, "videos/a") // a: even ids
	if s.Cursor != 6 {
		t.Fatalf("cursor = %d, want 6", s.Cursor)
	}
	frames, ok := h.Backlog(s, 2)
	if !ok {
		t.Fatal("history holds 3..6 but Backlog(2) missed")
	}
	var ids []int64
	for _, f := range frames {
		ids = append(ids, f.ID)
	}
	if got, want := fmt.Sprint(ids), "[4 6]"; got != want {
		t.Errorf("backlog = %s, want %s", got, want)
	}
	if _, ok := h.Backlog(s, 1); ok {
		t.Error("Backlog(1) claimed history that was evicted")
	}

	t.Run("BytesBound", func(t *testing.T) {
		h := NewHub(HubConfig{HistoryLen: 100, HistoryBytes: 1000})
		h.Start(0)
		for id := int64(1); id <= 50; id++ {
			h.Publish([]event.Event{statusEvent(id, "a")})
		}
		if h.history.bytes > 1000 {
			t.Errorf("history holds %d bytes, bound 1000", h.history.bytes)
		}
		if h.history.from == 0 {
			t.Error("history did not move its start when trimmed")
		}
		big := statusEvent(51, strings.Repeat("x", 2000))
		h.Publish([]event.Event{big})
		if h.history.from != 51 || h.history.frames.Len() != 0 {
			t.Errorf("event larger than the bound: from=%d n=%d, want 51 and empty", h.history.from, h.history.frames.Len())
		}
	})
}

func TestHub_Drain(t *testing.T) {
	h := NewHub(HubConfig{})
	h.Start(0)
	subs := []*Subscriber{mustSubscribe(t, h, "videos/a"), mustSubscribe(t, h, "videos/b"), mustSubscribe(t, h, "videos/c")}
	start := time.Now()
	h.Drain(nil, 300*time.Millisecond)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("drain took %v: streams should be spread over the window", took)
	}
	for i, s := range subs {
		select {
		case <-s.Done():
			if s.Reason() != EndDraining {
				t.Errorf("sub %d reason %s", i, s.Reason())
			}
		default:
			t.Errorf("sub %d not ended by drain", i)
		}
	}
	if _, err := h.Subscribe(topics(t, "videos/a"), nil); err != errHubClosed {
		t.Errorf("subscribe after drain: %v, want errHubClosed", err)
	}
}

func BenchmarkHub_Publish(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h, subs := fanOut(b, n)
			events := []event.Event{statusEvent(0, "a")}
			var taken []*sse.Frame
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				events[0].ID = int64(i + 1)
				h.Publish(events)
				for _, s := range subs {
					taken = s.queue.take(taken[:0])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// fanOut returns a started hub with n subscribers of videos/a.
func fanOut(tb testing.TB, n int) (*Hub, []*Subscriber) {
	h := NewHub(HubConfig{QueueLen: 16})
	h.Start(0)
	subs := make([]*Subscriber, n)
	for i := range subs {
		subs[i] = mustSubscribe(tb, h, "videos/a")
	}
	return h, subs
}

// TestHub_DeliveryAllocs: delivering to more subscribers allocates nothing
// more; the event is encoded once, whatever the fan-out.
func TestHub_DeliveryAllocs(t *testing.T) {
	allocs := func(n int) float64 {
		h, subs := fanOut(t, n)
		events := []event.Event{statusEvent(0, "a")}
		taken := make([]*sse.Frame, 0, 16)
		id := int64(0)
		deliver := func() {
			id++
			events[0].ID = id
			h.Publish(events)
			for _, s := range subs {
				taken = s.queue.take(taken[:0])
			}
		}
		for range 5000 { // grow the history ring and the queues to their steady size
			deliver()
		}
		return testing.AllocsPerRun(500, deliver)
	}
	// Per-event costs (encoding) are the same for both; one allocation per
	// delivery would add 999. A stray one (the race detector's) is tolerated.
	one, many := allocs(1), allocs(1000)
	if many-one > 1 {
		t.Errorf("allocations per event: %v with 1 subscriber, %v with 1000: delivery must not allocate", one, many)
	}
}

func BenchmarkHub_Backlog(b *testing.B) {
	h := NewHub(HubConfig{})
	h.Start(0)
	for id := int64(1); id <= 4096; id++ {
		h.Publish([]event.Event{statusEvent(id, fmt.Sprint("v", id%100))})
	}
	s := mustSubscribe(b, h, "videos/v7")
	b.ReportAllocs()
	for b.Loop() {
		if frames, ok := h.Backlog(s, 0); !ok || len(frames) != 41 {
			b.Fatalf("backlog %d, %v", len(frames), ok)
		}
	}
}

// TestHub_Reset: a replaced log ends every subscriber with EndLogReset, drops
// the old log's history, and the hub continues from the new cursor, even below
// its old one.
func TestHub_Reset(t *testing.T) {
	h := NewHub(HubConfig{})
	h.Start(0)
	old := mustSubscribe(t, h, "videos/*")
	h.Publish([]event.Event{statusEvent(1, "a"), statusEvent(2, "b"), statusEvent(3, "a")})

	h.Reset(1)
	select {
	case <-old.Done():
		if old.Reason() != EndLogReset {
			t.Errorf("ended with %s, want %s", old.Reason(), EndLogReset)
		}
	default:
		t.Fatal("a subscriber of the old log was not ended")
	}
	fresh := mustSubscribe(t, h, "videos/*")
	if fresh.Cursor != 1 {
		t.Errorf("new subscriber's cursor %d, want 1", fresh.Cursor)
	}
	if frames, ok := h.Backlog(fresh, 0); ok {
		t.Errorf("backlog after the reset: %d frames of the old log, want none (read the new log)", len(frames))
	}
	h.Publish([]event.Event{statusEvent(2, "c")})
	if got := queued(fresh); len(got) != 1 || got[0] != 2 {
		t.Errorf("queued %v after the reset, want the new log's 2", got)
	}
}
