package filter

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type stubFactory struct{ name string }

func (f stubFactory) Name() string                 { return f.name }
func (stubFactory) New(*anypb.Any) (Filter, error) { return nil, nil }
func (f stubFactory) ParsePerRoute(*anypb.Any) (any, error) {
	if f.name == "bad" {
		return nil, errors.New("no good")
	}
	return f.name, nil
}

func TestRegistryParsePerRoute(t *testing.T) {
	r := NewRegistry(stubFactory{"a"}, stubFactory{"bad"})
	if cfg, known, err := r.ParsePerRoute("a", nil); cfg != "a" || !known || err != nil {
		t.Errorf("a: %v %v %v", cfg, known, err)
	}
	if _, known, err := r.ParsePerRoute("other", nil); known || err != nil {
		t.Errorf("unknown filter: known=%v err=%v, want ignored", known, err)
	}
	if _, known, err := r.ParsePerRoute("bad", nil); !known || err == nil {
		t.Errorf("bad: known=%v err=%v, want the error", known, err)
	}
}

func TestStreamAnswers(t *testing.T) {
	s := NewStream(httptest.NewRequest("GET", "/", nil), http.Header{})
	if a, _ := s.Answer(); a != NoAnswer {
		t.Fatalf("a new stream has answer %v", a)
	}
	s.ResponseHeader().Set("Www-Authenticate", "Bearer")
	if st := s.SendLocalReply(LocalReply{Status: 401, Flag: "UAEX"}); st != Stop {
		t.Errorf("SendLocalReply returned %v, want Stop", st)
	}
	if a, r := s.Answer(); a != AnsweredLocalReply || r.Status != 401 || r.Flag != "UAEX" {
		t.Errorf("Answer = %v %+v", a, r)
	}
	if st := s.Respond(204); st != Stop {
		t.Errorf("Respond returned %v, want Stop", st)
	}
	if a, r := s.Answer(); a != AnsweredStatus || r.Status != 204 {
		t.Errorf("Answer = %v %+v", a, r)
	}
	if s.Metadata("envoy.filters.http.jwt_authn") != nil {
		t.Error("metadata of a new stream")
	}
	s.SetMetadata("envoy.filters.http.jwt_authn", "claims")
	if got := s.Metadata("envoy.filters.http.jwt_authn"); got != "claims" {
		t.Errorf("Metadata = %v", got)
	}
	s.AddResponseFlag("DI")
	if f := s.ResponseFlags(); len(f) != 1 || f[0] != "DI" {
		t.Errorf("ResponseFlags = %v", f)
	}
}
