package audit

import (
	"fmt"
	"net"
	"os/user"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxCommand bounds a command or argument in a record, in bytes after
// escaping: a client can send megabytes as SSH_ORIGINAL_COMMAND.
const MaxCommand = 1024

// Sanitize makes client-controlled text safe to read in a terminal or a
// line-oriented tool: control characters and invalid UTF-8 become \xNN
// (\u{NNNN} above 0xff), a backslash becomes \\, so the original stays
// recoverable, and the result is cut to at most max bytes at an escape
// boundary. truncated says whether anything was cut.
func Sanitize(s string, max int) (out string, truncated bool) {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size == 1:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\\':
			piece = `\\`
		case unicode.IsControl(r) && r <= 0xff:
			piece = fmt.Sprintf(`\x%02x`, r)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			piece = fmt.Sprintf(`\u{%04x}`, r)
		default:
			piece = s[i : i+size]
		}
		if b.Len()+len(piece) > max {
			return b.String(), true
		}
		b.WriteString(piece)
		i += size
	}
	return b.String(), false
}

// Text is Sanitize with MaxCommand, for fields where a cut is not flagged
// (arguments, error messages); a cut is shown by a trailing "...".
func Text(s string) string {
	out, cut := Sanitize(s, MaxCommand)
	if cut {
		out += "..."
	}
	return out
}

// ClientAddress returns "host:port" of the client from sshd's
// SSH_CONNECTION ("client_ip client_port server_ip server_port"), or ""
// when it is missing or malformed.
func ClientAddress(sshConnection string) string {
	f := strings.Fields(sshConnection)
	if len(f) != 4 || net.ParseIP(f[0]) == nil {
		return ""
	}
	if _, err := strconv.ParseUint(f[1], 10, 16); err != nil {
		return ""
	}
	return net.JoinHostPort(f[0], f[1])
}

// AdminActor names the person behind an admin command: the login that
// ran sudo (SUDO_USER), else the name of the real uid, else "uid:N".
func AdminActor(sudoUser string, uid int) string {
	if sudoUser != "" {
		return Text(sudoUser)
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return Text(u.Username)
	}
	return "uid:" + strconv.Itoa(uid)
}
