package update

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	testOS   = "linux"
	testArch = "amd64"
	oldBin   = "#!/bin/sh\necho v0.1.0\n"
)

// newBinary is a "release binary" that runs anywhere: a script printing
// its version.
func newBinary(version string) []byte {
	return []byte("#!/bin/sh\necho " + version + "\n")
}

func tarGz(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(files[n])
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// releaseServer is a fake GitHub: the releases API plus asset downloads.
type releaseServer struct {
	*httptest.Server
	mu       sync.Mutex
	tag      string
	latestSt int    // status of /releases/latest (0 = 200)
	latestRB string // raw body override for /releases/latest
	assets   map[string][]byte
	assetSt  map[string]int
	omit     map[string]bool // asset listed in the API answer? (true = not listed)
	hits     []string
}

func newReleaseServer(t *testing.T, tag string, bin []byte) *releaseServer {
	t.Helper()
	archiveName := AssetName(tag, testOS, testArch)
	archive := tarGz(t, map[string][]byte{"podspawn": bin, "README.md": []byte("readme")})
	other := tarGz(t, map[string][]byte{"podspawn": []byte("arm binary")})
	otherName := AssetName(tag, "linux", "arm64")
	rs := &releaseServer{tag: tag, assets: map[string][]byte{
		archiveName:   archive,
		otherName:     other,
		checksumsName: []byte(fmt.Sprintf("%s  %s\n%s  %s\n", sha(other), otherName, sha(archive), archiveName)),
	}, assetSt: map[string]int{}, omit: map[string]bool{}}
	rs.Server = httptest.NewServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *releaseServer) serve(w http.ResponseWriter, r *http.Request) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.hits = append(rs.hits, r.URL.Path)
	if r.URL.Path == "/repos/podspawn/podspawn/releases/latest" {
		if r.Header.Get("User-Agent") == "" {
			http.Error(w, `{"message":"missing User-Agent"}`, http.StatusForbidden)
			return
		}
		if rs.latestSt != 0 {
			w.WriteHeader(rs.latestSt)
			w.Write([]byte(rs.latestRB))
			return
		}
		if rs.latestRB != "" {
			w.Write([]byte(rs.latestRB))
			return
		}
		rel := Release{TagName: rs.tag}
		names := make([]string, 0, len(rs.assets))
		for n := range rs.assets {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if !rs.omit[n] {
				rel.Assets = append(rel.Assets, Asset{Name: n, URL: rs.URL + "/download/" + rs.tag + "/" + n})
			}
		}
		json.NewEncoder(w).Encode(rel)
		return
	}
	if name, ok := strings.CutPrefix(r.URL.Path, "/download/"+rs.tag+"/"); ok {
		if st := rs.assetSt[name]; st != 0 {
			w.WriteHeader(st)
			return
		}
		if b, ok := rs.assets[name]; ok {
			w.Write(b)
			return
		}
	}
	http.NotFound(w, r)
}

func (rs *releaseServer) downloads() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var d []string
	for _, h := range rs.hits {
		if strings.HasPrefix(h, "/download/") {
			d = append(d, filepath.Base(h))
		}
	}
	return d
}

// installed is a binary in its own directory, as /usr/local/bin/podspawn.
func installed(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "podspawn")
	if err := os.WriteFile(p, []byte(oldBin), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type outcome struct {
	Out       string
	Err       string
	Installed bool
	Binary    string      // content of the target afterwards
	Mode      os.FileMode // its permissions
	DirFiles  []string    // files next to it (no leftovers)
	Downloads []string
}

func TestRun(t *testing.T) {
	v2 := newBinary("v0.2.0")
	unchanged := func(o *outcome) { o.Binary, o.Mode, o.DirFiles = oldBin, 0o755, []string{"podspawn"} }
	replaced := func(o *outcome) { o.Binary, o.Mode, o.DirFiles = string(v2), 0o755, []string{"podspawn"} }
	archive := AssetName("v0.2.0", testOS, testArch)
	cases := []struct {
		name  string
		opts  Options
		bin   []byte // release binary (default v2)
		setup func(rs *releaseServer)
		want  outcome
		after func(o *outcome)
	}{
		{name: "up to date", opts: Options{Current: "v0.2.0"},
			want: outcome{Out: "already on latest version (v0.2.0)\n"}, after: unchanged},
		{name: "newer release is installed", opts: Options{Current: "v0.1.0"},
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\nupdated to v0.2.0\n", Installed: true,
				Downloads: []string{checksumsName, archive}}, after: replaced},
		{name: "unprefixed current version", opts: Options{Current: "0.1.0"},
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\nupdated to v0.2.0\n", Installed: true,
				Downloads: []string{checksumsName, archive}}, after: replaced},
		{name: "check only", opts: Options{Current: "v0.1.0", Check: true},
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\n"}, after: unchanged},
		{name: "downgrade refused", opts: Options{Current: "v0.3.0"},
			want: outcome{Out: "current version v0.3.0 is newer than the latest release (v0.2.0); not downgrading\n"}, after: unchanged},
		{name: "downgrade refused even with force", opts: Options{Current: "v0.3.0", Force: true},
			want: outcome{Out: "current version v0.3.0 is newer than the latest release (v0.2.0); not downgrading\n"}, after: unchanged},
		{name: "prerelease of the latest is older", opts: Options{Current: "v0.2.0-rc.1"},
			want: outcome{Out: "current: v0.2.0-rc.1, latest: v0.2.0\ndownloading v0.2.0...\nupdated to v0.2.0\n", Installed: true,
				Downloads: []string{checksumsName, archive}}, after: replaced},
		{name: "dev build is not replaced", opts: Options{Current: "dev"},
			want: outcome{Out: "current: dev (development build; not a release), latest: v0.2.0\n",
				Err: "not replacing a development build; re-run with --force to install v0.2.0 over it"}, after: unchanged},
		{name: "dev build check", opts: Options{Current: "dev", Check: true},
			want: outcome{Out: "current: dev (development build; not a release), latest: v0.2.0\n"}, after: unchanged},
		{name: "non-semver build is not replaced", opts: Options{Current: "1.x-custom"},
			want: outcome{Out: "current: 1.x-custom (development build; not a release), latest: v0.2.0\n",
				Err: "not replacing a development build; re-run with --force to install v0.2.0 over it"}, after: unchanged},
		{name: "dev build with force", opts: Options{Current: "dev", Force: true},
			want: outcome{Out: "current: dev (development build; not a release), latest: v0.2.0\ndownloading v0.2.0...\nupdated to v0.2.0\n", Installed: true,
				Downloads: []string{checksumsName, archive}}, after: replaced},
		{name: "checksum mismatch", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) {
				rs.assets[checksumsName] = []byte(strings.Repeat("ab", 32) + "  " + archive + "\n")
			},
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       "checksum mismatch for " + archive + ": got sha256 SHA, checksums.txt says " + strings.Repeat("ab", 32) + "; not installing",
				Downloads: []string{checksumsName, archive}}, after: unchanged},
		{name: "missing asset", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) { rs.omit[archive] = true },
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err: "release v0.2.0 has no " + archive + " for linux/amd64"}, after: unchanged},
		{name: "missing checksums file", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) { rs.omit[checksumsName] = true },
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err: "release v0.2.0 has no checksums.txt; refusing to install an unverified binary"}, after: unchanged},
		{name: "no checksum for the asset", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) {
				rs.assets[checksumsName] = []byte(strings.Repeat("ab", 32) + "  other.tar.gz\n")
			},
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       "release v0.2.0: checksums.txt has no entry for " + archive + "; refusing to install an unverified binary",
				Downloads: []string{checksumsName}}, after: unchanged},
		{name: "server error", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) { rs.latestSt = http.StatusInternalServerError },
			want:  outcome{Err: "checking for updates: GET URL/repos/podspawn/podspawn/releases/latest: HTTP 500 Internal Server Error"}, after: unchanged},
		{name: "rate limited", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) {
				rs.latestSt, rs.latestRB = http.StatusForbidden, `{"message":"API rate limit exceeded for 192.0.2.1."}`
			},
			want: outcome{Err: "checking for updates: GET URL/repos/podspawn/podspawn/releases/latest: HTTP 403 Forbidden: API rate limit exceeded for 192.0.2.1."}, after: unchanged},
		{name: "asset download fails", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) { rs.assetSt[archive] = http.StatusBadGateway },
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       "downloading " + archive + ": GET URL/download/v0.2.0/" + archive + ": HTTP 502 Bad Gateway",
				Downloads: []string{checksumsName, archive}}, after: unchanged},
		{name: "not a gzip archive", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) { setArchive(rs, archive, []byte("<html>oops</html>")) },
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       archive + ": not a gzip archive: gzip: invalid header",
				Downloads: []string{checksumsName, archive}}, after: unchanged},
		{name: "archive without the binary", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) {
				setArchive(rs, archive, tarGz(t, map[string][]byte{"bin/podspawn": v2}))
			},
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       archive + ": no podspawn binary at the archive root",
				Downloads: []string{checksumsName, archive}}, after: unchanged},
		{name: "binary that does not run", opts: Options{Current: "v0.1.0"}, bin: []byte("#!/bin/sh\necho 'Exec format error'\nexit 126\n"),
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       "the downloaded binary does not run here (exit status 126: Exec format error); not installing",
				Downloads: []string{checksumsName, archive}}, after: unchanged},
		{name: "binary of another version", opts: Options{Current: "v0.1.0"}, bin: newBinary("v0.1.9"),
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       `the downloaded binary reports version "v0.1.9", expected v0.2.0; not installing`,
				Downloads: []string{checksumsName, archive}}, after: unchanged},
		{name: "latest tag is not semver", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) { rs.latestRB = `{"tag_name":"nightly","assets":[]}` },
			want:  outcome{Err: `latest release tag "nightly" is not a semantic version; not updating`}, after: unchanged},
		{name: "invalid JSON", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer) { rs.latestRB = `<html>` },
			want:  outcome{Err: "checking for updates: URL/repos/podspawn/podspawn/releases/latest returned invalid JSON: invalid character '<' looking for beginning of value"}, after: unchanged},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin := tc.bin
			if bin == nil {
				bin = v2
			}
			rs := newReleaseServer(t, "v0.2.0", bin)
			if tc.setup != nil {
				tc.setup(rs)
			}
			target := installed(t)
			o := tc.opts
			o.Target, o.GOOS, o.GOARCH = target, testOS, testArch
			var out bytes.Buffer
			c := &Client{HTTP: rs.Client(), BaseURL: rs.URL, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
			ok, err := Run(context.Background(), c, o, &out)

			got := outcome{Out: out.String(), Installed: ok, Downloads: rs.downloads()}
			if err != nil {
				got.Err = strings.ReplaceAll(err.Error(), rs.URL, "URL")
			}
			b, _ := os.ReadFile(target)
			got.Binary = string(b)
			if fi, err := os.Stat(target); err == nil {
				got.Mode = fi.Mode().Perm()
			}
			entries, _ := os.ReadDir(filepath.Dir(target))
			for _, e := range entries {
				got.DirFiles = append(got.DirFiles, e.Name())
			}
			want := tc.want
			tc.after(&want)
			if strings.Contains(want.Err, "got sha256 SHA") {
				want.Err = strings.Replace(want.Err, "SHA", sha(rs.assets[archive]), 1)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// setArchive replaces the archive and keeps checksums.txt consistent, so
// the failure under test is the archive's content, not its checksum.
func setArchive(rs *releaseServer, name string, b []byte) {
	rs.assets[name] = b
	rs.assets[checksumsName] = []byte(sha(b) + "  " + name + "\n")
}

func TestRunNetworkError(t *testing.T) {
	rs := newReleaseServer(t, "v0.2.0", newBinary("v0.2.0"))
	url := rs.URL
	rs.Close()
	target := installed(t)
	c := &Client{HTTP: &http.Client{}, BaseURL: url, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
	var out bytes.Buffer
	_, err := Run(context.Background(), c, Options{Current: "v0.1.0", Target: target, GOOS: testOS, GOARCH: testArch}, &out)
	if err == nil || !strings.HasPrefix(err.Error(), "checking for updates: Get \""+url+"/repos/podspawn/podspawn/releases/latest\": dial tcp") {
		t.Errorf("err = %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != oldBin {
		t.Errorf("binary changed: %q", b)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q", out.String())
	}
}

func TestRunDevBuildError(t *testing.T) {
	rs := newReleaseServer(t, "v0.2.0", newBinary("v0.2.0"))
	c := &Client{HTTP: rs.Client(), BaseURL: rs.URL, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
	_, err := Run(context.Background(), c, Options{Current: "dev", Target: installed(t), GOOS: testOS, GOARCH: testArch}, &bytes.Buffer{})
	if !errors.Is(err, ErrDevBuild) {
		t.Errorf("err = %v, want ErrDevBuild", err)
	}
}

func TestCompare(t *testing.T) {
	cases := []struct {
		current, latest string
		want            Verdict
		err             string
	}{
		{"v0.2.0", "v0.2.0", UpToDate, ""},
		{"0.2.0", "v0.2.0", UpToDate, ""},
		{"v0.2.0", "0.2.0", UpToDate, ""},
		{"v0.1.0", "v0.2.0", Available, ""},
		{"v0.9.0", "v0.10.0", Available, ""}, // not string order
		{"v0.2.0-rc.1", "v0.2.0", Available, ""},
		{"v0.3.0", "v0.2.0", Newer, ""},
		{"v1.0.0", "v0.99.0", Newer, ""},
		{"dev", "v0.2.0", Unversioned, ""},
		{"", "v0.2.0", Unversioned, ""},
		{"v0.1.0-dirty+abc", "v0.2.0", Available, ""},
		{"v0.1.0", "latest", 0, `latest release tag "latest" is not a semantic version; not updating`},
	}
	for _, tc := range cases {
		got, err := Compare(tc.current, tc.latest)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tc.want || gotErr != tc.err {
			t.Errorf("Compare(%q, %q) = %v, %q; want %v, %q", tc.current, tc.latest, got, gotErr, tc.want, tc.err)
		}
	}
}

func TestChecksumFor(t *testing.T) {
	sum := strings.Repeat("0f", 32)
	cases := []struct {
		name, data string
		want, err  string
	}{
		{"found", "aaaa  other\n" + sum + "  podspawn_0.2.0_linux_amd64.tar.gz\n", sum, ""},
		{"binary-mode marker and upper case", strings.ToUpper(sum) + " *podspawn_0.2.0_linux_amd64.tar.gz\n", sum, ""},
		{"missing", sum + "  podspawn_0.2.0_linux_arm64.tar.gz\n", "", "checksums.txt has no entry for podspawn_0.2.0_linux_amd64.tar.gz; refusing to install an unverified binary"},
		{"malformed", "xyz  podspawn_0.2.0_linux_amd64.tar.gz\n", "", `checksums.txt has a malformed SHA-256 for podspawn_0.2.0_linux_amd64.tar.gz: "xyz"`},
		{"prefix of a longer name does not match", sum + "  podspawn_0.2.0_linux_amd64.tar.gz.sig\n", "", "checksums.txt has no entry for podspawn_0.2.0_linux_amd64.tar.gz; refusing to install an unverified binary"},
	}
	for _, tc := range cases {
		got, err := checksumFor([]byte(tc.data), "podspawn_0.2.0_linux_amd64.tar.gz")
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if diff := cmp.Diff([]string{tc.want, tc.err}, []string{got, gotErr}); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestAssetName(t *testing.T) {
	if got := AssetName("v0.2.0", "linux", "arm64"); got != "podspawn_0.2.0_linux_arm64.tar.gz" {
		t.Errorf("got %q", got)
	}
}

func TestExtractBinaryRejectsNonRegular(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "podspawn", Typeflag: tar.TypeSymlink, Linkname: "/bin/sh"})
	tw.Close()
	zw.Close()
	_, err := extractBinary(buf.Bytes())
	if err == nil || err.Error() != `podspawn in the archive is not a regular file (type '2')` {
		t.Errorf("err = %v", err)
	}
}

// A directory the new binary cannot be written to fails before any
// download.
func TestRunUnwritableTargetFailsBeforeDownload(t *testing.T) {
	rs := newReleaseServer(t, "v0.2.0", newBinary("v0.2.0"))
	target := filepath.Join(t.TempDir(), "gone", "podspawn")
	c := &Client{HTTP: rs.Client(), BaseURL: rs.URL, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
	var out bytes.Buffer
	_, err := Run(context.Background(), c, Options{Current: "v0.1.0", Target: target, GOOS: testOS, GOARCH: testArch}, &out)
	if err == nil || !strings.HasPrefix(err.Error(), "cannot write to "+filepath.Dir(target)+": ") || !strings.HasSuffix(err.Error(), "(run as root: sudo podspawn update)") {
		t.Errorf("err = %v", err)
	}
	if diff := cmp.Diff("current: v0.1.0, latest: v0.2.0\n", out.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if d := rs.downloads(); len(d) != 0 {
		t.Errorf("downloaded %v", d)
	}
}
