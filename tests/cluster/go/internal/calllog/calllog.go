// Package calllog logs every gRPC call of a server on one line.
package calllog

import (
	"context"
	"log"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Interceptor logs each call's method, duration and status code; from
// verbosity 1 on also its request (secrets left out), from 2 on also its
// response.
func Interceptor(l *log.Logger, verbosity int) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		line := info.FullMethod + " " + time.Since(start).Round(time.Microsecond).String()
		st := status.Convert(err)
		line += " " + st.Code().String()
		if err != nil {
			line += " " + strconv.Quote(st.Message())
		}
		if verbosity >= 1 {
			line += " req=" + compact(req)
		}
		if verbosity >= 2 && err == nil {
			line += " resp=" + compact(resp)
		}
		l.Print(line)
		return resp, err
	}
}

// compact renders a message as one line of JSON, without secrets.
func compact(v any) string {
	m, ok := v.(proto.Message)
	if !ok {
		return "?"
	}
	m = withoutSecrets(m)
	b, err := protojson.Marshal(m)
	if err != nil {
		return "?"
	}
	return string(b)
}

// withoutSecrets returns m, or a copy of it whose top-level "secrets" map
// (where CSI requests carry credentials) is replaced by a placeholder.
func withoutSecrets(m proto.Message) proto.Message {
	fd := m.ProtoReflect().Descriptor().Fields().ByName("secrets")
	if fd == nil || !fd.IsMap() || m.ProtoReflect().Get(fd).Map().Len() == 0 {
		return m
	}
	c := proto.Clone(m)
	r := c.ProtoReflect()
	secrets := r.Mutable(fd).Map()
	var keys []protoreflect.MapKey
	secrets.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	for _, k := range keys {
		secrets.Set(k, protoreflect.ValueOfString("***"))
	}
	return c
}
