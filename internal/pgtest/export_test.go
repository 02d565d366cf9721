package pgtest

import "path/filepath"

// GlobPGBin lists the installation directories findPGBin searches.
func GlobPGBin() ([]string, error) {
	var all []string
	for _, p := range binGlobs {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, err
		}
		all = append(all, m...)
	}
	return all, nil
}
