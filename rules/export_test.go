package rules

// SetBacktestLimit lowers the number of messages a backtest reads, until the returned func runs.
func SetBacktestLimit(n uint64) (restore func()) {
	old := backtestLimit
	backtestLimit = n
	return func() { backtestLimit = old }
}
