package integration

import (
	"encoding/json"

	"google.golang.org/grpc/status"
)

// grpcCode names the gRPC code of err ("OK" for nil).
func grpcCode(err error) string {
	return status.Code(err).String()
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
