package event

import (
	"strings"
	"testing"
)

func TestParseTopic(t *testing.T) {
	for _, ok := range []string{"videos/abc123", "videos/*", "a", "a/b/c", "videos/Ab_-.~:@9", "org/1/*"} {
		if _, err := ParseTopic(ok); err != nil {
			t.Errorf("ParseTopic(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "*", "/", "videos/", "/videos", "videos//a", "videos/*/x", "videos/a*", "vi deos", "videos/a\n", "videos/\x00", "videos/é", "videos/a?b", "videos/%", "videos/%2", "videos/%zz", "videos/a%2", strings.Repeat("a", MaxTopicLen+1)} {
		if _, err := ParseTopic(bad); err == nil {
			t.Errorf("ParseTopic(%q) accepted", bad)
		}
	}
}

// TestParseTopic_Canonical: escapes name the topic pgsse publishes to, whatever
// their case, and whether or not the byte needed one.
func TestParseTopic_Canonical(t *testing.T) {
	for in, want := range map[string]string{
		"videos/legacy%20upload%207": "videos/legacy%20upload%207",
		"videos/%c3%a9%2f%2a":        "videos/%C3%A9%2F%2A",
		"videos/%61bc%3A":            "videos/abc:",
		"videos/%2A/*":               "videos/%2A/*",
	} {
		topic, err := ParseTopic(in)
		if err != nil || topic.String() != want {
			t.Errorf("ParseTopic(%q) = %q, %v; want %q", in, topic.String(), err, want)
		}
	}
	topic, _ := ParseTopic("videos/a%2Fb%20c")
	if id, ok := VideoID(topic.String()); !ok || id != "a/b c" {
		t.Errorf("VideoID = %q, %v; want \"a/b c\"", id, ok)
	}
}

func TestTopic_Matches(t *testing.T) {
	for _, tc := range []struct {
		pattern, topic string
		want           bool
	}{
		{"videos/a", "videos/a", true},
		{"videos/a", "videos/ab", false},
		{"videos/*", "videos/a", true},
		{"videos/*", "videos/a/thumbs", true},
		{"videos/*", "videos", false},
		{"videos/*", "videosx/a", false},
	} {
		topic, err := ParseTopic(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := topic.Matches(tc.topic); got != tc.want {
			t.Errorf("%s matches %s = %v, want %v", tc.pattern, tc.topic, got, tc.want)
		}
	}
}
