package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/podspawn/podspawn/desired"
)

// UserSessions reads every session of user (any status) with its leases,
// ordered by project, in one read transaction. Used by remove-user.
func (s *Store) UserSessions(ctx context.Context, user string) ([]*desired.Session, error) {
	tx, err := s.rdb.BeginTxx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("loading sessions of %s: %w", user, err)
	}
	defer tx.Rollback()
	var rows []sessionRow
	if err := tx.SelectContext(ctx, &rows, `SELECT `+sessionCols+` FROM sessions WHERE user = ? ORDER BY project`, user); err != nil {
		return nil, fmt.Errorf("loading sessions of %s: %w", user, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	q, args, err := sqlx.In(`SELECT id, session_id, pid, pid_start, started_at FROM leases WHERE session_id IN (?) ORDER BY id`, ids)
	if err != nil {
		return nil, err
	}
	var leases []leaseRow
	if err := tx.SelectContext(ctx, &leases, tx.Rebind(q), args...); err != nil {
		return nil, fmt.Errorf("loading leases of %s: %w", user, err)
	}
	return assemble(rows, leases)
}
