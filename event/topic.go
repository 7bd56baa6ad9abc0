package event

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MaxTopicLen bounds a topic's length in bytes.
const MaxTopicLen = 256

// VideoTopic returns the topic of video id, "videos/" and the id as one topic
// segment: every byte outside A-Za-z0-9_.~:@- is percent-encoded with uppercase
// hex, as pgsse.topic_segment does in SQL. ok is false for an id no topic can
// carry (empty, or longer than MaxTopicLen once encoded): its changes are not
// published, and its writes still succeed.
func VideoTopic(id string) (topic string, ok bool) {
	topic = "videos/" + EncodeSegment(id)
	return topic, id != "" && len(topic) <= MaxTopicLen
}

// VideoID returns the id of video topic ("videos/" and one segment), decoded:
// the inverse of VideoTopic.
func VideoID(topic string) (string, bool) {
	seg, ok := strings.CutPrefix(topic, "videos/")
	if !ok || seg == "" || strings.IndexByte(seg, '/') >= 0 {
		return "", false
	}
	id, err := DecodeSegment(seg)
	return id, err == nil
}

// EncodeSegment percent-encodes s into one topic segment.
func EncodeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if Unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[c>>4])
		b.WriteByte("0123456789ABCDEF"[c&15])
	}
	return b.String()
}

// DecodeSegment reverses EncodeSegment.
func DecodeSegment(seg string) (string, error) {
	return url.PathUnescape(seg)
}

// Unreserved reports whether c stands for itself in a topic segment.
func Unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("_.~:@-", c) >= 0
}

// Topic is a validated topic ("videos/abc123") or pattern ("videos/*": every topic
// under videos/).
type Topic struct {
	name     string
	wildcard bool
}

var errTopic = errors.New("a topic is /-separated segments of letters, digits, _.~:@- and %XX escapes of other bytes, optionally ending in /*, e.g. videos/abc123, videos/legacy%20upload or videos/*")

// ParseTopic validates s.
func ParseTopic(s string) (Topic, error) {
	if s == "" {
		return Topic{}, errors.New("topic is empty; " + errTopic.Error())
	}
	if len(s) > MaxTopicLen {
		return Topic{}, fmt.Errorf("topic is %d bytes, more than %d", len(s), MaxTopicLen)
	}
	name, wildcard := strings.CutSuffix(s, "/*")
	var canonical strings.Builder
	for i, seg := range strings.Split(name, "/") {
		decoded, ok := decodeSegment(seg)
		if !ok {
			return Topic{}, errTopic
		}
		if i > 0 {
			canonical.WriteByte('/')
		}
		canonical.WriteString(EncodeSegment(decoded))
	}
	if wildcard {
		canonical.WriteString("/*")
	}
	// Canonical: %61 and a, %3a and %3A name one topic, the one pgsse publishes to.
	return Topic{name: canonical.String(), wildcard: wildcard}, nil
}

// decodeSegment decodes a non-empty segment of unreserved bytes and %XX escapes.
func decodeSegment(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case Unreserved(c):
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			i += 2
		default:
			return "", false
		}
	}
	decoded, err := DecodeSegment(s)
	return decoded, err == nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// String returns the topic in canonical form: escapes only where needed, in
// uppercase hex.
func (t Topic) String() string { return t.name }

// Wildcard reports whether t is a pattern.
func (t Topic) Wildcard() bool { return t.wildcard }

// Prefix is what a pattern's matches start with: "videos/" for "videos/*".
func (t Topic) Prefix() string { return strings.TrimSuffix(t.name, "*") }

// Matches reports whether an event on topic belongs to t. A pattern matches every
// topic under its prefix, at any depth: videos/* matches videos/abc/thumbs too.
func (t Topic) Matches(topic string) bool {
	if !t.wildcard {
		return topic == t.name
	}
	return len(topic) > len(t.Prefix()) && strings.HasPrefix(topic, t.Prefix())
}
