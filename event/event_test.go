package event

import (
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name string
		raw  Raw
		want string // the envelope, or "" for a decode error
	}{
		{"StatusInsert", Raw{1, KindVideoStatus, "videos/a", at, []byte(`{"video_id":"a","status":"pending","previous_status":null}`)},
			`{"id":1,"kind":"video.status","topic":"videos/a","time":"2026-12-01T09:00:00.123456Z","data":{"video_id":"a","status":"pending","previous_status":null}}`},
		{"StatusUpdate", Raw{2, KindVideoStatus, "videos/a", at, []byte(`{"video_id":"a","status":"processed","previous_status":"pending"}`)},
			`{"id":2,"kind":"video.status","topic":"videos/a","time":"2026-12-01T09:00:00.123456Z","data":{"video_id":"a","status":"processed","previous_status":"pending"}}`},
		{"ProgressNoStage", Raw{3, KindVideoProgress, "videos/a", at, []byte(`{"video_id":"a","percent":12.5}`)},
			`{"id":3,"kind":"video.progress","topic":"videos/a","time":"2026-12-01T09:00:00.123456Z","data":{"video_id":"a","percent":12.5}}`},
		{"UnknownKindPassedThrough", Raw{4, "x.y", "videos/a", at, []byte(`{"any": [1, "two"]}`)},
			`{"id":4,"kind":"x.y","topic":"videos/a","time":"2026-12-01T09:00:00.123456Z","data":{"any":[1,"two"]}}`},
		{"UnknownKindNotObject", Raw{4, "x.y", "videos/a", at, []byte(`[1]`)}, ""},
		{"ExtraField", Raw{2, KindVideoStatus, "videos/a", at, []byte(`{"video_id":"a","status":"x","extra":1}`)}, ""},
		{"FieldCaseDiffers", Raw{2, KindVideoStatus, "videos/a", at, []byte(`{"Video_ID":"a","status":"x"}`)}, ""},
		{"NotJSON", Raw{5, KindVideoStatus, "videos/a", at, []byte(`nope`)}, ""},
		{"MissingVideoID", Raw{6, KindVideoStatus, "videos/a", at, []byte(`{"status":"x"}`)}, ""},
		{"PercentOutOfRange", Raw{7, KindVideoProgress, "videos/a", at, []byte(`{"video_id":"a","percent":101}`)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Decode(tc.raw)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("Decode accepted %s", tc.raw.Data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := ev.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}

func TestDecodeAll(t *testing.T) {
	good := Raw{1, KindVideoStatus, "videos/a", time.Unix(0, 0), []byte(`{"video_id":"a","status":"x"}`)}
	bad := Raw{2, KindVideoStatus, "videos/a", time.Unix(0, 0), []byte(`{}`)}
	var skipped []int64
	events := DecodeAll([]Raw{good, bad, good}, func(r Raw, err error) { skipped = append(skipped, r.ID) })
	if len(events) != 2 || len(skipped) != 1 || skipped[0] != 2 {
		t.Errorf("decoded %d, skipped %v; want 2 decoded and row 2 skipped", len(events), skipped)
	}
}

func TestEvent_MarshalJSON_Snapshot(t *testing.T) {
	ev := Event{ID: 9, Kind: KindVideoStatus, Topic: "videos/a", Time: time.Unix(0, 0), Data: &VideoStatus{VideoID: "a", Status: "processed"}, Snapshot: true}
	b, _ := ev.MarshalJSON()
	want := `{"id":9,"kind":"video.status","topic":"videos/a","time":"1970-01-01T00:00:00.000000Z","data":{"video_id":"a","status":"processed","previous_status":null},"snapshot":true}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
