package spawn

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
)

func TestCheckSFTPServer(t *testing.T) {
	const server, image = "/usr/lib/openssh/sftp-server", "ubuntu:24.04"
	for name, tc := range map[string]struct {
		statErr error
		want    string
	}{
		"present": {},
		"missing": {statErr: fmt.Errorf("stat %s: %w", server, errdefs.ErrNotFound),
			want: "podspawn: sftp and scp are not available in this session: /usr/lib/openssh/sftp-server does not exist in image ubuntu:24.04 " +
				"(install an sftp server in the image, e.g. Debian's openssh-sftp-server, or point ssh.sftp_server in the podspawn config at it)"},
		// Anything but "not found" lets sftp try: a check that cannot run
		// must not block a server that may be there.
		"Docker error": {statErr: errors.New("connection reset by peer")},
	} {
		t.Run(name, func(t *testing.T) {
			f := &fakeDocker{statErr: tc.statErr}
			if got := checkSFTPServer(context.Background(), f, "ctr", server, image); got != tc.want {
				t.Fatalf("checkSFTPServer = %q, want %q", got, tc.want)
			}
		})
	}
}
