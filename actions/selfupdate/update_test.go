package selfupdate

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"aead.dev/minisign"
	"github.com/google/go-cmp/cmp"
)

const (
	testOS   = "linux"
	testArch = "amd64"
	oldBin   = "#!/bin/sh\necho v0.1.0\n"
)

// newBinary is a "release binary" that runs anywhere: a script printing
// its version. Unless marker is "", running it creates marker, which
// proves whether anything downloaded was ever executed.
func newBinary(version, marker string) []byte {
	return script(marker, "echo "+version)
}

func script(marker, body string) []byte {
	s := "#!/bin/sh\n"
	if marker != "" {
		s += "touch '" + marker + "'\n"
	}
	return []byte(s + body + "\n")
}

// testKey is a fresh minisign key pair; the "source" names it in messages.
func testKey(t *testing.T) (*Key, minisign.PrivateKey) {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := pub.MarshalText()
	k, err := ParseKey(string(text), "test key")
	if err != nil {
		t.Fatal(err)
	}
	return k, priv
}

// sign is what "minisign -S -m <name>" writes: a prehashed signature whose
// trusted comment names the file.
func sign(priv minisign.PrivateKey, name string, b []byte) []byte {
	return signComment(priv, "timestamp:1700000000\tfile:"+name+"\thashed", b)
}

func signComment(priv minisign.PrivateKey, comment string, b []byte) []byte {
	r := minisign.NewReader(bytes.NewReader(b))
	if _, err := io.Copy(io.Discard, r); err != nil {
		panic(err)
	}
	return r.SignWithComments(priv, comment, "signature from minisign secret key")
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

// releaseServer is a fake GitHub over TLS: the releases API plus asset
// downloads, each archive signed with priv.
type releaseServer struct {
	*httptest.Server
	priv     minisign.PrivateKey
	mu       sync.Mutex
	tag      string
	latestSt int    // status of /releases/latest (0 = 200)
	latestRB string // raw body override for /releases/latest
	assets   map[string][]byte
	assetSt  map[string]int
	omit     map[string]bool // asset listed in the API answer? (true = not listed)
	// assetBase replaces the server's URL in the asset URLs listed.
	assetBase string
	// redirect sends an asset's download elsewhere.
	redirect map[string]string
	hits     []string
}

func newReleaseServer(t *testing.T, tag string, bin []byte, priv minisign.PrivateKey) *releaseServer {
	t.Helper()
	rs := &releaseServer{tag: tag, priv: priv, assets: map[string][]byte{}, assetSt: map[string]int{}, omit: map[string]bool{},
		redirect: map[string]string{}}
	setArchive(rs, AssetName(tag, testOS, testArch), tarGz(t, map[string][]byte{"podspawn": bin, "README.md": []byte("readme")}))
	setArchive(rs, AssetName(tag, "linux", "arm64"), tarGz(t, map[string][]byte{"podspawn": []byte("arm binary")}))
	rs.Server = httptest.NewUnstartedServer(http.HandlerFunc(rs.serve))
	// A client that rejects the test certificate is a tested case, not noise.
	rs.Config.ErrorLog = log.New(io.Discard, "", 0)
	rs.StartTLS()
	t.Cleanup(rs.Close)
	return rs
}

// setArchive replaces an archive with b and a valid signature of it, so
// that a failure under test is the archive's content, not its signature.
func setArchive(rs *releaseServer, name string, b []byte) {
	rs.assets[name] = b
	rs.assets[name+SignatureSuffix] = sign(rs.priv, name, b)
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
				base := rs.URL
				if rs.assetBase != "" {
					base = rs.assetBase
				}
				rel.Assets = append(rel.Assets, Asset{Name: n, URL: base + "/download/" + rs.tag + "/" + n})
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
		if to, ok := rs.redirect[name]; ok {
			http.Redirect(w, r, to, http.StatusFound)
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
	Ran       bool        // whether the downloaded binary was ever run
	Binary    string      // content of the target afterwards
	Mode      os.FileMode // its permissions
	DirFiles  []string    // files next to it (no leftovers)
	Downloads []string
}

func TestRun(t *testing.T) {
	key, priv := testKey(t)
	other, otherPriv := testKey(t)
	archive := AssetName("v0.2.0", testOS, testArch)
	sig := archive + SignatureSuffix
	head := "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n"
	verified := "verified " + archive + ": minisign signature by key " + key.ID() + " (test key)\n"
	// forged carries the trusted key's ID but was made with another key.
	forged := func(b []byte) []byte {
		var s minisign.Signature
		if err := s.UnmarshalText(sign(otherPriv, archive, b)); err != nil {
			t.Fatal(err)
		}
		s.KeyID = key.pub.ID()
		text, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		return text
	}
	cases := []struct {
		name     string
		opts     Options
		noKey    bool
		body     string // release binary's script after it touches the marker (default: echo v0.2.0)
		setup    func(rs *releaseServer, marker string)
		want     outcome
		replaced bool
	}{
		{name: "up to date", opts: Options{Current: "v0.2.0"},
			want: outcome{Out: "already on latest version (v0.2.0)\n"}},
		{name: "newer release is installed", opts: Options{Current: "v0.1.0"},
			want: outcome{Out: head + verified + "updated to v0.2.0\n", Installed: true, Ran: true,
				Downloads: []string{sig, archive}}, replaced: true},
		{name: "unprefixed current version", opts: Options{Current: "0.1.0"},
			want: outcome{Out: head + verified + "updated to v0.2.0\n", Installed: true, Ran: true,
				Downloads: []string{sig, archive}}, replaced: true},
		{name: "check only", opts: Options{Current: "v0.1.0", Check: true},
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\n"}},
		{name: "downgrade refused", opts: Options{Current: "v0.3.0"},
			want: outcome{Out: "current version v0.3.0 is newer than the latest release (v0.2.0); not downgrading\n"}},
		{name: "downgrade refused even with force", opts: Options{Current: "v0.3.0", Force: true},
			want: outcome{Out: "current version v0.3.0 is newer than the latest release (v0.2.0); not downgrading\n"}},
		{name: "prerelease of the latest is older", opts: Options{Current: "v0.2.0-rc.1"},
			want: outcome{Out: "current: v0.2.0-rc.1, latest: v0.2.0\ndownloading v0.2.0...\n" + verified + "updated to v0.2.0\n", Installed: true, Ran: true,
				Downloads: []string{sig, archive}}, replaced: true},
		{name: "dev build is not replaced", opts: Options{Current: "dev"},
			want: outcome{Out: "current: dev (development build; not a release), latest: v0.2.0\n",
				Err: "not replacing a development build; re-run with --force to install v0.2.0 over it"}},
		{name: "dev build check", opts: Options{Current: "dev", Check: true},
			want: outcome{Out: "current: dev (development build; not a release), latest: v0.2.0\n"}},
		{name: "non-semver build is not replaced", opts: Options{Current: "1.x-custom"},
			want: outcome{Out: "current: 1.x-custom (development build; not a release), latest: v0.2.0\n",
				Err: "not replacing a development build; re-run with --force to install v0.2.0 over it"}},
		{name: "dev build with force", opts: Options{Current: "dev", Force: true},
			want: outcome{Out: "current: dev (development build; not a release), latest: v0.2.0\ndownloading v0.2.0...\n" + verified + "updated to v0.2.0\n", Installed: true, Ran: true,
				Downloads: []string{sig, archive}}, replaced: true},
		// minisign -l: not prehashed, still Ed25519.
		{name: "legacy signature", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) {
				rs.assets[sig] = minisign.SignWithComments(priv, rs.assets[archive], "file:"+archive, "legacy")
			},
			want: outcome{Out: head + verified + "updated to v0.2.0\n", Installed: true, Ran: true,
				Downloads: []string{sig, archive}}, replaced: true},

		// No key: --check works, an install downloads nothing.
		{name: "no key, check", opts: Options{Current: "v0.1.0", Check: true}, noKey: true,
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\n"}},
		{name: "no key, up to date", opts: Options{Current: "v0.2.0"}, noKey: true,
			want: outcome{Out: "already on latest version (v0.2.0)\n"}},
		{name: "no key, install refused", opts: Options{Current: "v0.1.0"}, noKey: true,
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\n",
				Err: "refusing to install v0.2.0: no release signing key is configured, so the download cannot be verified; " +
					"set update.public_key in /etc/podspawn/config.yaml to the minisign public key that signs podspawn releases " +
					"(the RW... line of its minisign.pub) and re-run (podspawn update --check works without one)"}},

		// Signature failures: nothing is unpacked, run or installed.
		{name: "missing signature", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.omit[sig] = true },
			want: outcome{Out: head,
				Err: "release v0.2.0 has no signature " + sig + "; refusing to install an unsigned binary"}},
		{name: "signed by another key", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.assets[sig] = sign(otherPriv, archive, rs.assets[archive]) },
			want: outcome{Out: head,
				Err:       archive + " is signed by key " + other.ID() + ", not by the trusted key " + key.ID() + " (test key); not installing",
				Downloads: []string{sig, archive}}},
		{name: "forged signature with the trusted key ID", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.assets[sig] = forged(rs.assets[archive]) },
			want: outcome{Out: head,
				Err:       "signature of " + archive + " does not verify against key " + key.ID() + " (test key): the archive or its signature was altered; not installing",
				Downloads: []string{sig, archive}}},
		{name: "archive altered after signing", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, marker string) {
				rs.assets[archive] = tarGz(t, map[string][]byte{"podspawn": script(marker, "echo v0.2.0 # evil")})
			},
			want: outcome{Out: head,
				Err:       "signature of " + archive + " does not verify against key " + key.ID() + " (test key): the archive or its signature was altered; not installing",
				Downloads: []string{sig, archive}}},
		{name: "malformed signature", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.assets[sig] = []byte("<html>oops</html>") },
			want: outcome{Out: head,
				Err:       sig + " is not a minisign signature (minisign: invalid signature); not installing",
				Downloads: []string{sig, archive}}},
		// A validly signed archive of another release served as this one.
		{name: "signature names another file", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) {
				rs.assets[sig] = sign(priv, "podspawn_0.1.5_linux_amd64.tar.gz", rs.assets[archive])
			},
			want: outcome{Out: head,
				Err:       `signature of ` + archive + ` is valid but its trusted comment "timestamp:1700000000\tfile:podspawn_0.1.5_linux_amd64.tar.gz\thashed" does not name file:` + archive + `; not installing`,
				Downloads: []string{sig, archive}}},
		{name: "signature download fails", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.assetSt[sig] = http.StatusBadGateway },
			want: outcome{Out: head,
				Err:       "downloading " + sig + ": GET URL/download/v0.2.0/" + sig + ": HTTP 502 Bad Gateway",
				Downloads: []string{sig}}},

		{name: "missing asset", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.omit[archive] = true },
			want: outcome{Out: head,
				Err: "release v0.2.0 has no " + archive + " for linux/amd64"}},
		{name: "server error", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.latestSt = http.StatusInternalServerError },
			want:  outcome{Err: "checking for updates: GET URL/repos/podspawn/podspawn/releases/latest: HTTP 500 Internal Server Error"}},
		{name: "rate limited", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) {
				rs.latestSt, rs.latestRB = http.StatusForbidden, `{"message":"API rate limit exceeded for 192.0.2.1."}`
			},
			want: outcome{Err: "checking for updates: GET URL/repos/podspawn/podspawn/releases/latest: HTTP 403 Forbidden: API rate limit exceeded for 192.0.2.1."}},
		{name: "asset download fails", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.assetSt[archive] = http.StatusBadGateway },
			want: outcome{Out: head,
				Err:       "downloading " + archive + ": GET URL/download/v0.2.0/" + archive + ": HTTP 502 Bad Gateway",
				Downloads: []string{sig, archive}}},
		{name: "not a gzip archive", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { setArchive(rs, archive, []byte("<html>oops</html>")) },
			want: outcome{Out: head,
				Err:       archive + ": not a gzip archive: gzip: invalid header",
				Downloads: []string{sig, archive}}},
		{name: "archive without the binary", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, marker string) {
				setArchive(rs, archive, tarGz(t, map[string][]byte{"bin/podspawn": newBinary("v0.2.0", marker)}))
			},
			want: outcome{Out: head,
				Err:       archive + ": no podspawn binary at the archive root",
				Downloads: []string{sig, archive}}},
		// Signed, so the self-test may run it.
		{name: "binary that does not run", opts: Options{Current: "v0.1.0"}, body: "echo 'Exec format error'\nexit 126",
			want: outcome{Out: head + verified, Ran: true,
				Err:       "the downloaded binary does not run here (exit status 126: Exec format error); not installing",
				Downloads: []string{sig, archive}}},
		{name: "binary of another version", opts: Options{Current: "v0.1.0"}, body: "echo v0.1.9",
			want: outcome{Out: head + verified, Ran: true,
				Err:       `the downloaded binary reports version "v0.1.9", expected v0.2.0; not installing`,
				Downloads: []string{sig, archive}}},
		{name: "latest tag is not semver", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.latestRB = `{"tag_name":"nightly","assets":[]}` },
			want:  outcome{Err: `latest release tag "nightly" is not a semantic version; not updating`}},
		{name: "invalid JSON", opts: Options{Current: "v0.1.0"},
			setup: func(rs *releaseServer, _ string) { rs.latestRB = `<html>` },
			want:  outcome{Err: "checking for updates: URL/repos/podspawn/podspawn/releases/latest returned invalid JSON: invalid character '<' looking for beginning of value"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			body := tc.body
			if body == "" {
				body = "echo v0.2.0"
			}
			bin := script(marker, body)
			rs := newReleaseServer(t, "v0.2.0", bin, priv)
			if tc.setup != nil {
				tc.setup(rs, marker)
			}
			target := installed(t)
			o := tc.opts
			o.Target, o.GOOS, o.GOARCH, o.Key, o.ConfigPath = target, testOS, testArch, key, "/etc/podspawn/config.yaml"
			if tc.noKey {
				o.Key = nil
			}
			var out bytes.Buffer
			c := &Client{HTTP: rs.Client(), BaseURL: rs.URL, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
			ok, err := Run(context.Background(), c, o, &out)
			got := observe(t, target, marker, out.String(), ok, err, rs.downloads(), rs.URL)
			want := tc.want
			want.Binary, want.Mode, want.DirFiles = oldBin, 0o755, []string{"podspawn"}
			if tc.replaced {
				want.Binary = string(bin)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// observe collects what a run did; serverURL is shown as URL in errors.
func observe(t *testing.T, target, marker, out string, ok bool, err error, downloads []string, serverURL string) outcome {
	t.Helper()
	got := outcome{Out: out, Installed: ok, Downloads: downloads}
	if err != nil {
		got.Err = strings.ReplaceAll(err.Error(), serverURL, "URL")
	}
	_, statErr := os.Stat(marker)
	got.Ran = statErr == nil
	b, _ := os.ReadFile(target)
	got.Binary = string(b)
	if fi, err := os.Stat(target); err == nil {
		got.Mode = fi.Mode().Perm()
	}
	entries, _ := os.ReadDir(filepath.Dir(target))
	for _, e := range entries {
		got.DirFiles = append(got.DirFiles, e.Name())
	}
	return got
}

// Every URL must be https unless the test-only override is on, and a
// refusal comes before anything is sent over plain http.
func TestRunRequiresHTTPS(t *testing.T) {
	key, priv := testKey(t)
	archive := AssetName("v0.2.0", testOS, testArch)
	sig := archive + SignatureSuffix
	notHTTPS := ": not an https:// URL (update.base_url and release downloads must use https)"
	cases := []struct {
		name  string
		check bool
		allow bool
		// plainAPI serves the releases API over http; plainAssets lists
		// http asset URLs; redirect sends the signature download to http.
		plainAPI, plainAssets, redirect bool
		want                            outcome
		replaced                        bool
	}{
		{name: "http base URL", plainAPI: true,
			want: outcome{Err: "checking for updates: refusing PLAIN/repos/podspawn/podspawn/releases/latest" + notHTTPS}},
		{name: "http base URL, check", check: true, plainAPI: true,
			want: outcome{Err: "checking for updates: refusing PLAIN/repos/podspawn/podspawn/releases/latest" + notHTTPS}},
		{name: "http asset URLs", plainAssets: true,
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err: "downloading " + sig + ": refusing PLAIN/download/v0.2.0/" + sig + notHTTPS}},
		{name: "redirect to http", redirect: true,
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Err:       "downloading " + sig + `: Get "PLAIN/download/v0.2.0/` + sig + `": refusing PLAIN/download/v0.2.0/` + sig + notHTTPS,
				Downloads: []string{sig}}},
		{name: "http with the test override", allow: true, plainAPI: true,
			want: outcome{Out: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\nverified " + archive + ": minisign signature by key " + key.ID() + " (test key)\nupdated to v0.2.0\n",
				Installed: true, Ran: true}, replaced: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			marker := filepath.Join(t.TempDir(), "ran")
			bin := newBinary("v0.2.0", marker)
			rs := newReleaseServer(t, "v0.2.0", bin, priv)
			// plain is the same release over http; it counts every request.
			var mu sync.Mutex
			var plainHits []string
			plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				plainHits = append(plainHits, r.URL.Path)
				mu.Unlock()
				rs.serve(w, r)
			}))
			defer plain.Close()
			base := rs.URL
			if tc.plainAPI {
				base = plain.URL
			}
			if tc.plainAssets || tc.plainAPI {
				rs.assetBase = plain.URL
			}
			if tc.redirect {
				rs.redirect[sig] = plain.URL + "/download/v0.2.0/" + sig
			}
			target := installed(t)
			c := &Client{HTTP: rs.Client(), BaseURL: base, Repo: "podspawn/podspawn", UserAgent: "podspawn/test", AllowInsecureHTTP: tc.allow}
			var out bytes.Buffer
			ok, err := Run(context.Background(), c, Options{Current: "v0.1.0", Check: tc.check, Target: target,
				GOOS: testOS, GOARCH: testArch, Key: key}, &out)
			got := observe(t, target, marker, out.String(), ok, err, rs.downloads(), rs.URL)
			got.Err = strings.ReplaceAll(got.Err, plain.URL, "PLAIN")
			want := tc.want
			want.Binary, want.Mode, want.DirFiles = oldBin, 0o755, []string{"podspawn"}
			if tc.replaced {
				want.Binary = string(bin)
				// Through the override, downloads went to the plain server.
				want.Downloads = []string{sig, archive}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			mu.Lock()
			defer mu.Unlock()
			if !tc.allow && len(plainHits) != 0 {
				t.Errorf("requests over plain http: %v", plainHits)
			}
		})
	}
}

func TestRunNetworkError(t *testing.T) {
	key, priv := testKey(t)
	rs := newReleaseServer(t, "v0.2.0", newBinary("v0.2.0", ""), priv)
	url := rs.URL
	rs.Close()
	target := installed(t)
	c := &Client{HTTP: &http.Client{}, BaseURL: url, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
	var out bytes.Buffer
	_, err := Run(context.Background(), c, Options{Current: "v0.1.0", Target: target, GOOS: testOS, GOARCH: testArch, Key: key}, &out)
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

// The default client does not trust the test server's certificate: TLS is
// verified, not merely spoken.
func TestRunUntrustedCertificate(t *testing.T) {
	key, priv := testKey(t)
	rs := newReleaseServer(t, "v0.2.0", newBinary("v0.2.0", ""), priv)
	c := &Client{HTTP: &http.Client{}, BaseURL: rs.URL, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
	_, err := Run(context.Background(), c, Options{Current: "v0.1.0", Check: true, Key: key}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("err = %v, want a certificate error", err)
	}
}

func TestRunDevBuildError(t *testing.T) {
	key, priv := testKey(t)
	rs := newReleaseServer(t, "v0.2.0", newBinary("v0.2.0", ""), priv)
	c := &Client{HTTP: rs.Client(), BaseURL: rs.URL, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
	_, err := Run(context.Background(), c, Options{Current: "dev", Target: installed(t), GOOS: testOS, GOARCH: testArch, Key: key}, &bytes.Buffer{})
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

func TestParseKey(t *testing.T) {
	pub, _, err := minisign.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	file, _ := pub.MarshalText()
	for name, text := range map[string]string{"minisign.pub": string(file), "base64 line": "  " + pub.String() + "\n"} {
		k, err := ParseKey(text, "src")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := fmt.Sprintf("%016X", pub.ID()); k.ID() != want || k.Source != "src" {
			t.Errorf("%s: ID %s source %q, want %s", name, k.ID(), k.Source, want)
		}
	}
	_, err = ParseKey("RWQnot a key", "update.public_key in /etc/podspawn/config.yaml")
	if err == nil || !strings.HasPrefix(err.Error(), "update.public_key in /etc/podspawn/config.yaml is not a minisign public key (minisign: ") {
		t.Errorf("err = %v", err)
	}
}

// Install takes only what Download verified.
func TestInstallRefusesUnverified(t *testing.T) {
	target := installed(t)
	if err := Install(context.Background(), target, Verified{}, "v0.2.0"); err == nil {
		t.Error("installed an unverified binary")
	}
	if b, _ := os.ReadFile(target); string(b) != oldBin {
		t.Errorf("binary changed: %q", b)
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
	key, priv := testKey(t)
	rs := newReleaseServer(t, "v0.2.0", newBinary("v0.2.0", ""), priv)
	target := filepath.Join(t.TempDir(), "gone", "podspawn")
	c := &Client{HTTP: rs.Client(), BaseURL: rs.URL, Repo: "podspawn/podspawn", UserAgent: "podspawn/test"}
	var out bytes.Buffer
	_, err := Run(context.Background(), c, Options{Current: "v0.1.0", Target: target, GOOS: testOS, GOARCH: testArch, Key: key}, &out)
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
