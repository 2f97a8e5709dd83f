package kubesource

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a Source starts ends with Run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
