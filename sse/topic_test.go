package sse

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
	for _, bad := range []string{"", "*", "/", "videos/", "/videos", "videos//a", "videos/*/x", "videos/a*", "vi deos", "videos/a\n", "videos/\x00", "videos/é", "videos/a?b", strings.Repeat("a", MaxTopicLen+1)} {
		if _, err := ParseTopic(bad); err == nil {
			t.Errorf("ParseTopic(%q) accepted", bad)
		}
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
