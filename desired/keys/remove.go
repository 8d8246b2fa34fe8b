package keys

import (
	"errors"
	"io/fs"
)

// Remove deletes user's key file, so the user can no longer log in: the
// desired-state edit of remove-user. It goes through a handle on the key
// directory (a link is removed, not followed); a file already gone is no
// error.
func Remove(dir, user string) error {
	d, err := OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Remove(user); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
