package listener

import (
	"testing"
	"time"
)

// TestCatchUpGap: a catch-up is followed by catchUpShare times its length,
// within [minCatchUpGap, maxCatchUpGap].
func TestCatchUpGap(t *testing.T) {
	for _, tc := range []struct{ took, want time.Duration }{
		{0, minCatchUpGap},
		{100 * time.Microsecond, minCatchUpGap},
		{time.Millisecond, catchUpShare * time.Millisecond},
		{time.Second, maxCatchUpGap},
	} {
		if got := catchUpGap(tc.took); got != tc.want {
			t.Errorf("catchUpGap(%v) = %v, want %v", tc.took, got, tc.want)
		}
	}
}
