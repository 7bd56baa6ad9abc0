package stream

import "pgsse/hub"

// EndReason says why a stream ended: logged with its last line, and the label
// of pgsse_streams_closed_total.
type EndReason = hub.EndReason

// End reasons: the stream's own, and the hub's ends of its subscriber.
const (
	EndClientGone  EndReason = "client_gone"
	EndWriteFailed EndReason = "write_failed" // write error or write deadline passed
	EndAuthExpired EndReason = "auth_expired"

	EndOverflow = hub.EndOverflow
	EndDraining = hub.EndDraining
	EndShutdown = hub.EndShutdown
	EndLogReset = hub.EndLogReset
)
