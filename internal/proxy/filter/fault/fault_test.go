package fault

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var all = &typev3.FractionalPercent{Numerator: 100}

func decode(t *testing.T, hf *faultv3.HTTPFault, ctx context.Context) (*filter.Stream, filter.Status) {
	t.Helper()
	cfg, err := Factory{}.ParsePerRoute(proxytest.MustAny(t, hf))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Factory{}.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := filter.NewStream(httptest.NewRequest("GET", "/", nil).WithContext(ctx), http.Header{})
	s.PerRoute = cfg
	return s, f.DecodeHeaders(s)
}

func TestAbort(t *testing.T) {
	for _, tc := range []struct {
		name string
		ab   *faultv3.FaultAbort
		want filter.LocalReply
	}{
		{"http", &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418}, Percentage: all},
			filter.LocalReply{Status: 418, Body: "fault filter abort", Flag: "FI"}},
		{"grpc", &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}, Percentage: all},
			filter.LocalReply{Status: 503, GRPCStatus: "14", Body: "fault filter abort", Flag: "FI"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, st := decode(t, &faultv3.HTTPFault{Abort: tc.ab}, context.Background())
			if a, reply := s.Answer(); st != filter.Stop || a != filter.AnsweredLocalReply || reply != tc.want {
				t.Errorf("got %v, %v %+v; want a local reply %+v", st, a, reply, tc.want)
			}
		})
	}
	s, st := decode(t, &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 500}}}, context.Background())
	if a, _ := s.Answer(); st != filter.Continue || a != filter.NoAnswer {
		t.Errorf("0%% abort: %v %v, want the request to continue", st, a)
	}
}

func TestDelay(t *testing.T) {
	delay := &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(time.Hour)}, Percentage: all}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client is gone: the delay ends at once
	s, st := decode(t, &faultv3.HTTPFault{Delay: delay}, ctx)
	if a, _ := s.Answer(); st != filter.Stop || a != filter.NoAnswer || strings.Join(s.ResponseFlags(), ",") != "DI" {
		t.Errorf("got %v %v flags %v; want Stop without an answer, flag DI", st, a, s.ResponseFlags())
	}
	delay.FaultDelaySecifier = &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(time.Millisecond)}
	s, st = decode(t, &faultv3.HTTPFault{Delay: delay}, context.Background())
	if st != filter.Continue || strings.Join(s.ResponseFlags(), ",") != "DI" {
		t.Errorf("got %v flags %v; want Continue, flag DI", st, s.ResponseFlags())
	}
}

func TestParsePerRouteErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		hf   *faultv3.HTTPFault
		want string
	}{
		{"header delay", &faultv3.HTTPFault{Delay: &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_HeaderDelay_{}}}, "delay.header_delay: unsupported"},
		{"status range", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 99}}}, "abort.http_status: 99 out of range"},
		{"no error type", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{}}, "abort: want http_status or grpc_status"},
		{"conditions", &faultv3.HTTPFault{UpstreamCluster: "c"}, "conditions are unsupported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := (Factory{}).ParsePerRoute(proxytest.MustAny(t, tc.hf)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
	if _, err := (Factory{}).ParsePerRoute(proxytest.MustAny(t, &typev3.FractionalPercent{})); err == nil || !strings.Contains(err.Error(), "want HTTPFault") {
		t.Errorf("wrong type: err = %v", err)
	}
}
