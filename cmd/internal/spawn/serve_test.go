package spawn

import (
	"context"
	"errors"
	"testing"
)

func TestCheckSFTPServer(t *testing.T) {
	const server, image = "/usr/lib/openssh/sftp-server", "ubuntu:24.04"
	for name, tc := range map[string]struct {
		exists  bool
		statErr error
		want    string
	}{
		"present": {exists: true},
		"missing": {
			want: "podspawn: sftp and scp are not available in this session: /usr/lib/openssh/sftp-server does not exist in image ubuntu:24.04 " +
				"(install an sftp server in the image, e.g. Debian's openssh-sftp-server, or point ssh.sftp_server in the podspawn config at it)"},
		// Anything but "not found" lets sftp try: a check that cannot run
		// must not block a server that may be there.
		"runtime error": {statErr: errors.New("connection reset by peer")},
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeExecer{exists: tc.exists, statErr: tc.statErr}
			if got := checkSFTPServer(context.Background(), f, "ctr", server, image); got != tc.want {
				t.Fatalf("checkSFTPServer = %q, want %q", got, tc.want)
			}
		})
	}
}
