package spend

// WriteBehindStats is a snapshot of the ledger's write-behind, for
// monitoring (the Caddy adapter exports it as Prometheus gauges).
type WriteBehindStats struct {
	// DirtyAccounts is the number of accounts charged or reset since the
	// last flush took them: their changes are not in the store yet.
	DirtyAccounts int
	// RetryRows is the number of rows (deltas, resets, daily aggregates) of
	// a batch the store refused, waiting to be sent again with the next
	// flush. It stays 0 while writes succeed; it grows while the store is
	// failing. -1 means a flush was in progress and the batch was not read
	// (the caller should keep its previous value rather than wait).
	RetryRows int
}

// WriteBehind returns the write-behind state without blocking on a flush
// in progress (a scrape must not wait on a slow store).
func (l *Ledger) WriteBehind() WriteBehindStats {
	var s WriteBehindStats
	l.dirtyMu.Lock()
	s.DirtyAccounts = len(l.dirty)
	l.dirtyMu.Unlock()
	if !l.flushMu.TryLock() {
		s.RetryRows = -1
		return s
	}
	if pb := l.retry; pb != nil {
		s.RetryRows = len(pb.b.Deltas) + len(pb.b.Resets) + len(pb.b.Daily)
	}
	l.flushMu.Unlock()
	return s
}
