package awskmstest

// Dir returns the server's temporary directory (data and log).
func Dir(s *Server) string { return s.dir }
