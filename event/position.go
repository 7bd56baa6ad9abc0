package event

import (
	"errors"
	"time"
)

// Position is a reader's place in the log: the id of the last event it read and
// that event's time. The time tells this log's event apart from another's with
// the same id: a log restored from a backup, recovered to a point in time, failed
// over to a replica that was behind, or recreated, hands out ids again. Time is
// zero when no event is known there (an empty or fully pruned log).
type Position struct {
	ID   int64
	Time time.Time
}

// ErrLogReplaced means the log no longer holds the event at a reader's position,
// and nothing pruned it: the log is not the one the reader was reading.
var ErrLogReplaced = errors.New("the event log was replaced: it no longer holds the event at the reader's position")
