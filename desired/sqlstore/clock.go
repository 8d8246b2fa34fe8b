package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/podspawn/podspawn/desired"
)

type clockRow struct {
	Wall      int64  `db:"wall"`
	Boot      int64  `db:"boot_ns"`
	BootID    string `db:"boot_id"`
	HoldUntil int64  `db:"hold_until_ns"`
}

func getClockSample(ctx context.Context, q sqlx.QueryerContext) (*desired.ClockSample, error) {
	var r clockRow
	err := sqlx.GetContext(ctx, q, &r, `SELECT wall, boot_ns, boot_id, hold_until_ns FROM clock_sample WHERE id = 1`)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the clock sample of the last pass: %w", err)
	}
	return &desired.ClockSample{Wall: fromTS(r.Wall), Boot: time.Duration(r.Boot), BootID: r.BootID, HoldUntil: time.Duration(r.HoldUntil)}, nil
}

// ClockSample returns the clocks recorded by the last one-shot pass, nil
// when none was.
func (s *Store) ClockSample(ctx context.Context) (*desired.ClockSample, error) {
	return getClockSample(ctx, s.db)
}

// CheckClock compares now with the recorded sample and records the next
// one, in one transaction, so that two passes at once each compare with
// the sample of a whole pass.
func (s *Store) CheckClock(ctx context.Context, now desired.ClockSample) (desired.ClockCheck, error) {
	var c desired.ClockCheck
	err := s.Tx(ctx, func(tx *sqlx.Tx) error {
		prev, err := getClockSample(ctx, tx)
		if err != nil {
			return err
		}
		c = desired.CheckClock(prev, now)
		n := c.Next
		_, err = tx.ExecContext(ctx, `INSERT INTO clock_sample (id, wall, boot_ns, boot_id, hold_until_ns) VALUES (1, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET wall = excluded.wall, boot_ns = excluded.boot_ns, boot_id = excluded.boot_id, hold_until_ns = excluded.hold_until_ns`,
			ts(n.Wall), int64(n.Boot), n.BootID, int64(n.HoldUntil))
		if err != nil {
			return fmt.Errorf("recording the clock sample of this pass: %w", err)
		}
		return nil
	})
	return c, err
}
