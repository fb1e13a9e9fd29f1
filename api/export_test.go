package api

// IdleDrainers returns how many drain goroutines s keeps idle for its
// sessions (server-wide, not per connection).
func IdleDrainers(s *Server) int { return s.idleDrainers() }
