package integration

import (
	"google.golang.org/grpc/status"
)

// grpcCode names the gRPC code of err ("OK" for nil).
func grpcCode(err error) string {
	return status.Code(err).String()
}
