package sse

import (
	"errors"
	"fmt"
	"strings"
)

// MaxTopicLen bounds a topic's length in bytes.
const MaxTopicLen = 256

// Topic is a validated topic ("videos/abc123") or pattern ("videos/*": every topic
// under videos/).
type Topic struct {
	name     string
	wildcard bool
}

var errTopic = errors.New("a topic is /-separated segments of letters, digits and _.~:@-, optionally ending in /*, e.g. videos/abc123 or videos/*")

// ParseTopic validates s.
func ParseTopic(s string) (Topic, error) {
	if s == "" {
		return Topic{}, errors.New("topic is empty; " + errTopic.Error())
	}
	if len(s) > MaxTopicLen {
		return Topic{}, fmt.Errorf("topic is %d bytes, more than %d", len(s), MaxTopicLen)
	}
	name, wildcard := strings.CutSuffix(s, "/*")
	for seg := range strings.SplitSeq(name, "/") {
		if !validSegment(seg) {
			return Topic{}, errTopic
		}
	}
	return Topic{name: s, wildcard: wildcard}, nil
}

func validSegment(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("_.~:@-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// String returns the topic as the client wrote it.
func (t Topic) String() string { return t.name }

// Wildcard reports whether t is a pattern.
func (t Topic) Wildcard() bool { return t.wildcard }

// prefix is what a pattern's matches start with: "videos/" for "videos/*".
func (t Topic) prefix() string { return strings.TrimSuffix(t.name, "*") }

// Matches reports whether an event on topic belongs to t. A pattern matches every
// topic under its prefix, at any depth: videos/* matches videos/abc/thumbs too.
func (t Topic) Matches(topic string) bool {
	if !t.wildcard {
		return topic == t.name
	}
	return len(topic) > len(t.prefix()) && strings.HasPrefix(topic, t.prefix())
}

// VideoID returns the id in a videos/{id} topic.
func (t Topic) VideoID() (string, bool) {
	if t.wildcard {
		return "", false
	}
	id, ok := strings.CutPrefix(t.name, "videos/")
	return id, ok && strings.IndexByte(id, '/') < 0
}
