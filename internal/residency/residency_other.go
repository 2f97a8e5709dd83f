//go:build !linux

package residency

import "errors"

// PageOutExecutable does nothing where the platform is not Linux.
func PageOutExecutable() (Result, error) {
	return Result{}, errors.New("residency: paging out the executable needs Linux")
}

// dropCache does nothing where the platform is not Linux.
func dropCache() {}
