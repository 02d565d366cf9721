// Package rtmxtrace holds the test that keeps .rtmx/database.csv, RTMX's
// requirements database for this repository, true: every row names a
// test that exists and carries the row's "// rtmx:req" marker, and every
// marker names a row. It has no code of its own.
package rtmxtrace
