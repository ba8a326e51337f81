package oci

import (
	"slices"
	"strings"
)

// ambientCaps are the requested ambient capabilities that the container
// holds at all (an ambient capability must be permitted and inheritable).
func ambientCaps(requested, held []string) []string {
	var out []string
	for _, n := range requested {
		n = strings.ToUpper(n)
		if !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		if slices.Contains(held, n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func unionCaps(a, b []string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
