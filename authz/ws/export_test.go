package ws

// Decode exposes the message decoder to the fuzz target: it returns the
// op, room and data of an accepted message, or the error code sent back.
func Decode(b []byte) (op, room string, data []byte, code string) {
	req, err := decode(b)
	if err != nil {
		return "", "", nil, err.(*protoError).code
	}
	return req.Op, req.Room, req.Data, ""
}
