//go:build !unix

package localkms

import "io/fs"

// links returns 1: this platform does not report hard links here.
func links(fs.FileInfo) uint64 { return 1 }
