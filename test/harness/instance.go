package harness

import (
	"context"
	"testing"

	"github.com/podspawn/podspawn/desired/sqlstore"
)

func instanceIDGo(t testing.TB, path string) string {
	st, err := sqlstore.Open(context.Background(), path)
	if err != nil {
		t.Logf("opening %s: %v", path, err)
		return ""
	}
	defer st.Close()
	return st.InstanceID()
}
