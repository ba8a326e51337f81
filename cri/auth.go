package cri

import (
	"encoding/base64"
	"strings"
)

// decodeBasicAuth splits the base64 "user:password" of AuthConfig.auth.
func decodeBasicAuth(s string) (user, password string) {
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", ""
	}
	user, password, _ = strings.Cut(string(data), ":")
	return user, password
}
