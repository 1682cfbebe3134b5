package calllog

import (
	"bytes"
	"context"
	"log"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestOneLineWithoutSecrets(t *testing.T) {
	var buf bytes.Buffer
	intercept := Interceptor(log.New(&buf, "", 0), 2)
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Controller/CreateSnapshot"}
	req := &csi.CreateSnapshotRequest{Name: "snap", SourceVolumeId: "pvc", Secrets: map[string]string{"token": "hunter2"}}
	ok := func(context.Context, any) (any, error) {
		return &csi.CreateSnapshotResponse{Snapshot: &csi.Snapshot{SnapshotId: "snap"}}, nil
	}
	if _, err := intercept(context.Background(), req, info, ok); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if strings.Count(line, "\n") != 1 || !strings.Contains(line, "CreateSnapshot") || !strings.Contains(line, " OK ") ||
		!strings.Contains(line, `"snap"`) || strings.Contains(line, "hunter2") {
		t.Fatalf("logged %q", line)
	}
	if req.Secrets["token"] != "hunter2" {
		t.Fatal("logging changed the request")
	}

	buf.Reset()
	fail := func(context.Context, any) (any, error) {
		return nil, status.Error(codes.NotFound, "volume \"pvc\"\nnot found")
	}
	if _, err := intercept(context.Background(), req, info, fail); status.Code(err) != codes.NotFound {
		t.Fatal(err)
	}
	if line := buf.String(); strings.Count(line, "\n") != 1 || !strings.Contains(line, "NotFound") {
		t.Fatalf("logged %q", line)
	}
}
