package doctor

import (
	"os"
	"regexp"
	"testing"
)

// The audit log check: disabled, not created yet, healthy, and each way
// it can be wrong, with the fix to run.
func TestAuditLogCheck(t *testing.T) {
	cases := []struct {
		name     string
		needRoot bool
		setup    func(f *fixture)
		want     want
	}{
		{"disabled", false, func(f *fixture) {}, want{Pass, `^disabled \(log\.audit_log is not set\)$`, ""}},
		{"not created yet", false, func(f *fixture) { f.env.Config.Log.AuditLog = f.path("state/audit.log") },
			want{Pass, `^ROOT/state/audit\.log \(created by the first event\)$`, ""}},
		{"directory missing", false, func(f *fixture) { f.env.Config.Log.AuditLog = f.path("nope/audit.log") },
			want{Fail, `^audit log ROOT/nope/audit\.log cannot be created: ROOT/nope does not exist`, "sudo mkdir -p -m 700 ROOT/nope && sudo chown root:root ROOT/nope"}},
		{"healthy", true, func(f *fixture) {
			f.env.Config.Log.AuditLog = f.path("state/audit.log")
			f.write("state/audit.log", "")
			os.Chmod(f.path("state/audit.log"), 0o600)
		}, want{Pass, `^ROOT/state/audit\.log$`, ""}},
		{"wide mode", true, func(f *fixture) {
			f.env.Config.Log.AuditLog = f.path("state/audit.log")
			f.write("state/audit.log", "")
			os.Chmod(f.path("state/audit.log"), 0o644)
		}, want{Fail, `^audit log ROOT/state/audit\.log has mode 0644, want 0600$`, "sudo chmod 600 ROOT/state/audit.log"}},
		{"not root's", true, func(f *fixture) {
			f.env.Config.Log.AuditLog = f.path("state/audit.log")
			f.write("state/audit.log", "")
			os.Chmod(f.path("state/audit.log"), 0o600)
			os.Chown(f.path("state/audit.log"), 1234, 1234)
		}, want{Fail, `^audit log ROOT/state/audit\.log is owned by uid 1234, not root`, "sudo chown root:root ROOT/state/audit.log"}},
		{"symbolic link", false, func(f *fixture) {
			f.env.Config.Log.AuditLog = f.path("state/audit.log")
			os.Symlink("/etc/passwd", f.path("state/audit.log"))
		}, want{Fail, `^audit log ROOT/state/audit\.log is a symbolic link`, "point log.audit_log at the link's target, or replace the link with a file"}},
		{"a directory", false, func(f *fixture) { f.env.Config.Log.AuditLog = f.path("state") },
			want{Fail, `^audit log ROOT/state is not a regular file$`, "move ROOT/state aside or point log.audit_log at a file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needRoot && os.Geteuid() != 0 {
				t.Skip("needs root: the check wants the file owned by root")
			}
			f := newFixture(t)
			tc.setup(f)
			got := f.result("audit log")
			wantFix := f.expand(tc.want.Fix)
			if got.Status != tc.want.Status || got.Fix != wantFix || !regexp.MustCompile(f.expand(tc.want.Detail)).MatchString(got.Detail) {
				t.Errorf("got %+v\n want status %s, detail =~ %s, fix %q", got, tc.want.Status, f.expand(tc.want.Detail), wantFix)
			}
		})
	}
}
