// Package pluginreg serves the kubelet's plugin registration API for a CSI
// driver, the job node-driver-registrar does elsewhere: the kubelet finds
// the socket in its plugins_registry directory, asks GetInfo for the
// driver's name and CSI endpoint, and reports the outcome.
package pluginreg

import (
	"context"
	"fmt"
	"log"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// SocketName is the registration socket's file name for a driver.
func SocketName(driver string) string { return driver + "-reg.sock" }

// Server answers the kubelet for one CSI driver.
type Server struct {
	registerapi.UnimplementedRegistrationServer
	driver   string
	endpoint string
	log      *log.Logger
	failed   chan error
}

// New returns a Server for driver, whose CSI socket is at endpoint (a path
// the kubelet can dial).
func New(driver, endpoint string, l *log.Logger) *Server {
	return &Server{driver: driver, endpoint: endpoint, log: l, failed: make(chan error, 1)}
}

// Register adds the registration service to srv.
func (s *Server) Register(srv *grpc.Server) { registerapi.RegisterRegistrationServer(srv, s) }

// Failed delivers the kubelet's error when it refused the driver.
func (s *Server) Failed() <-chan error { return s.failed }

// GetInfo names the driver, its CSI socket and the CSI versions it speaks.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.driver,
		Endpoint:          s.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus logs the kubelet's verdict; a refusal is passed
// on through Failed, so that the driver can exit.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		s.log.Printf("registered with the kubelet as %s", s.driver)
		return &registerapi.RegistrationStatusResponse{}, nil
	}
	err := fmt.Errorf("kubelet refused to register %s: %s", s.driver, st.GetError())
	s.log.Print(err)
	select {
	case s.failed <- err:
	default:
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
