package desired

import "errors"

// userError is an error written for the connecting SSH user.
type userError struct{ err error }

func (e userError) Error() string { return e.err.Error() }
func (e userError) Unwrap() error { return e.err }

// ForUser marks err as written for the connecting SSH user: its text names
// only what the user asked for (no paths, no database or runtime errors),
// so spawn shows it as it is instead of an incident id. Untrusted input in
// the text must be quoted (%q).
func ForUser(err error) error { return userError{err} }

// UserFacing is an error type whose text is always written for the SSH
// user (a refusal that says how to proceed), as ForUser marks one error.
type UserFacing interface {
	error
	ForUser() bool
}

// UserMessage returns the text of the first error in err's chain marked
// with ForUser or of a UserFacing type.
func UserMessage(err error) (string, bool) {
	var u userError
	if errors.As(err, &u) {
		return u.Error(), true
	}
	var f UserFacing
	if errors.As(err, &f) && f.ForUser() {
		return f.Error(), true
	}
	return "", false
}
