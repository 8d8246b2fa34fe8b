package harness

import (
	"context"
	"fmt"

	"github.com/podspawn/podspawn/desired/sqlstore"
)

// instanceID opens the state database (creating it if missing) and
// returns its instance id.
func instanceID(path string) (string, error) {
	st, err := sqlstore.Open(context.Background(), path)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", path, err)
	}
	defer st.Close()
	id := st.InstanceID()
	if id == "" {
		return "", fmt.Errorf("%s has no instance id", path)
	}
	return id, nil
}
