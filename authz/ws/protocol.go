package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// The ops of the protocol.
const (
	opJoin    = "join"
	opLeave   = "leave"
	opPublish = "publish"
	opJoined  = "joined"
	opLeft    = "left"
	opMessage = "message"
	opError   = "error"
)

// request is a message a client sends.
type request struct {
	Op   string          `json:"op"`
	Room string          `json:"room"`
	Data json.RawMessage `json:"data,omitempty"`
}

// reply is a message the hub sends.
type reply struct {
	Op     string          `json:"op"`
	Room   string          `json:"room,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
	Code   string          `json:"code,omitempty"`
	Detail string          `json:"detail,omitempty"`
}

// A protoError is a request the hub refuses: its code and a fixed text,
// sent back in an error message.
type protoError struct{ code, detail string }

func (e *protoError) Error() string { return "ws: " + e.code + ": " + e.detail }

var (
	errMalformed = &protoError{"bad_message", `a message is one JSON object {"op":..., "room":..., "data":...} and nothing else`}
	errUnknownOp = &protoError{"unknown_op", `op must be "join", "leave" or "publish"`}
	errNoData    = &protoError{"bad_message", `a publish needs "data"`}
	errDataOp    = &protoError{"bad_message", `only a publish takes "data"`}
)

// decode parses one client message. It accepts exactly one JSON object
// with the members op, room and (for publish only) data, and nothing
// else: an unknown member such as "tenant" is refused, never ignored. The
// room name is checked too.
func decode(b []byte) (request, error) {
	var req request
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return request{}, errMalformed
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		return request{}, errMalformed
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return request{}, errMalformed
	}
	switch req.Op {
	case opJoin, opLeave:
		if req.Data != nil {
			return request{}, errDataOp
		}
	case opPublish:
		if len(req.Data) == 0 || string(req.Data) == "null" {
			return request{}, errNoData
		}
	default:
		return request{}, errUnknownOp
	}
	if err := validateRoom(req.Room); err != nil {
		return request{}, &protoError{"invalid_room", err.Error()[len("ws: "):]}
	}
	return req, nil
}

// encode returns the JSON of r.
func encode(r reply) []byte {
	b, err := json.Marshal(r)
	if err != nil { // only json.RawMessage could fail, and it is valid
		b, _ = json.Marshal(reply{Op: opError, Code: "internal", Detail: "message not encoded"})
	}
	return b
}
