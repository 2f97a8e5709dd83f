package upstream

import (
	"slices"
	"testing"
)

func TestStreamALPN(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"h2", "http/1.1"}, nil},
		{[]string{"istio", "h2"}, []string{"istio"}},
		{nil, nil},
	} {
		if got := streamALPN(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("streamALPN(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
