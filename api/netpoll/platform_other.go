//go:build unix && !linux

package netpoll

func newPlatform() (poller, error) { return newWaiters(), nil }
