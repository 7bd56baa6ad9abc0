package event

import (
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
