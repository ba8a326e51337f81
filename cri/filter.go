package cri

import "strings"

// matchID accepts the full ID or a prefix, as crictl lets users type.
func matchID(id, want string) bool { return strings.HasPrefix(id, want) }

// matchLabels reports whether labels contain every pair of selector.
func matchLabels(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
