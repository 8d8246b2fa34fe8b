package doctor_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"aead.dev/minisign"
	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/test/harness"
)

// A release build is stamped v0.1.0; the pinned one also carries a
// signing key built in, as a release would.
var (
	buildsOnce sync.Once
	buildsDir  string
	buildsErr  error
	pinnedPub  minisign.PublicKey
	pinnedPriv minisign.PrivateKey
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildsDir != "" {
		os.RemoveAll(buildsDir)
	}
	os.Exit(code)
}

func buildReleases(t *testing.T) {
	t.Helper()
	buildsOnce.Do(func() {
		if pinnedPub, pinnedPriv, buildsErr = minisign.GenerateKey(nil); buildsErr != nil {
			return
		}
		if buildsDir, buildsErr = os.MkdirTemp("", "podspawn-v010-"); buildsErr != nil {
			return
		}
		for name, ldflags := range map[string]string{
			"podspawn":        "-X main.version=v0.1.0",
			"podspawn-pinned": "-X main.version=v0.1.0 -X main.updatePublicKey=" + pinnedPub.String(),
		} {
			cmd := exec.Command("go", "build", "-ldflags", ldflags, "-o", filepath.Join(buildsDir, name), "./cmd")
			cmd.Dir = harness.RepoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				buildsErr = fmt.Errorf("go build: %v\n%s", err, out)
				return
			}
		}
	})
	if buildsErr != nil {
		t.Fatal(buildsErr)
	}
}

// binaryV010 is podspawn v0.1.0 without a built-in signing key.
func binaryV010(t *testing.T) string {
	buildReleases(t)
	return filepath.Join(buildsDir, "podspawn")
}

// binaryV010Pinned is podspawn v0.1.0 with pinnedPub built in.
func binaryV010Pinned(t *testing.T) string {
	buildReleases(t)
	return filepath.Join(buildsDir, "podspawn-pinned")
}

// releaseServer is a GitHub-like release v0.2.0 over TLS whose binary is
// a script that reports v0.2.0 and, when run, creates Marker.
type releaseServer struct {
	*httptest.Server
	Marker, Binary, Archive string
	// CertFile holds the server's certificate for SSL_CERT_FILE.
	CertFile  string
	mu        sync.Mutex
	archive   []byte
	signature []byte // nil: not listed
	downloads []string
}

func newReleaseServer(t *testing.T, priv minisign.PrivateKey) *releaseServer {
	t.Helper()
	rs := &releaseServer{Marker: filepath.Join(t.TempDir(), "ran"),
		Archive: fmt.Sprintf("podspawn_0.2.0_%s_%s.tar.gz", runtime.GOOS, runtime.GOARCH)}
	rs.Binary = "#!/bin/sh\ntouch '" + rs.Marker + "'\necho v0.2.0\n"
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "podspawn", Mode: 0o755, Size: int64(len(rs.Binary)), Typeflag: tar.TypeReg})
	tw.Write([]byte(rs.Binary))
	tw.Close()
	zw.Close()
	rs.archive = buf.Bytes()
	rs.signature = signArchive(priv, rs.Archive, rs.archive)
	rs.Server = httptest.NewTLSServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.Close)
	rs.CertFile = filepath.Join(t.TempDir(), "cert.pem")
	must(t, os.WriteFile(rs.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rs.Certificate().Raw}), 0o644))
	return rs
}

// signArchive is what "minisign -S -m <name>" writes.
func signArchive(priv minisign.PrivateKey, name string, b []byte) []byte {
	r := minisign.NewReader(bytes.NewReader(b))
	io.Copy(io.Discard, r)
	return r.SignWithComments(priv, "timestamp:1700000000\tfile:"+name+"\thashed", "signature from minisign secret key")
}

func (rs *releaseServer) serve(w http.ResponseWriter, r *http.Request) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	sigName := rs.Archive + ".minisig"
	switch r.URL.Path {
	case "/repos/podspawn/podspawn/releases/latest":
		assets := []map[string]string{{"name": rs.Archive, "browser_download_url": rs.URL + "/dl/" + rs.Archive}}
		if rs.signature != nil {
			assets = append(assets, map[string]string{"name": sigName, "browser_download_url": rs.URL + "/dl/" + sigName})
		}
		json.NewEncoder(w).Encode(map[string]any{"tag_name": "v0.2.0", "assets": assets})
	case "/dl/" + rs.Archive:
		rs.downloads = append(rs.downloads, rs.Archive)
		w.Write(rs.archive)
	case "/dl/" + sigName:
		rs.downloads = append(rs.downloads, sigName)
		w.Write(rs.signature)
	default:
		http.NotFound(w, r)
	}
}

func (rs *releaseServer) downloaded() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.downloads...)
}

func (rs *releaseServer) ran() bool {
	_, err := os.Stat(rs.Marker)
	return err == nil
}

type run struct {
	Stdout, Stderr string
	Code           int
}

// runBin runs bin trusting only certFile's certificate ("" for none).
func runBin(t *testing.T, bin, configPath, certFile string, args ...string) run {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--config", configPath}, args...)...)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+certFile, "SSL_CERT_DIR=/nonexistent")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return run{out.String(), errb.String(), code}
}

// install copies bin into its own directory, as /usr/local/bin/podspawn.
func install(t *testing.T, bin string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	must(t, err)
	p := filepath.Join(t.TempDir(), "podspawn")
	must(t, os.WriteFile(p, b, 0o755))
	return p
}

// updateConfig points update at baseURL; extra is more update: lines.
func updateConfig(t *testing.T, baseURL, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	must(t, os.WriteFile(p, []byte("update:\n  base_url: "+baseURL+"\n  repo: podspawn/podspawn\n"+extra), 0o644))
	return p
}

func keyLine(pub minisign.PublicKey) string { return "  public_key: " + pub.String() + "\n" }

func keyID(pub minisign.PublicKey) string { return fmt.Sprintf("%016X", pub.ID()) }

func TestUpdateCheckThenReplaceItself(t *testing.T) {
	pub, priv, err := minisign.GenerateKey(nil)
	must(t, err)
	rs := newReleaseServer(t, priv)
	cfg := updateConfig(t, rs.URL, keyLine(pub))
	self := install(t, binaryV010(t))
	before, _ := os.ReadFile(self)

	got := runBin(t, self, cfg, rs.CertFile, "update", "--check")
	if diff := cmp.Diff(run{Stdout: "current: v0.1.0, latest: v0.2.0\n"}, got); diff != "" {
		t.Errorf("update --check (-want +got):\n%s", diff)
	}
	if after, _ := os.ReadFile(self); !bytes.Equal(before, after) || len(rs.downloaded()) != 0 {
		t.Fatalf("--check changed the binary or downloaded %v", rs.downloaded())
	}

	// No --binary: the running executable replaces itself.
	got = runBin(t, self, cfg, rs.CertFile, "update")
	want := run{Stdout: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n" +
		"verified " + rs.Archive + ": minisign signature by key " + keyID(pub) + " (update.public_key in " + cfg + ")\n" +
		"updated to v0.2.0\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	after, _ := os.ReadFile(self)
	fi, err := os.Stat(self)
	must(t, err)
	if string(after) != rs.Binary || fi.Mode().Perm() != 0o755 {
		t.Errorf("binary after update: mode %v, content %.200q", fi.Mode().Perm(), after)
	}
	entries, _ := os.ReadDir(filepath.Dir(self))
	if len(entries) != 1 {
		t.Errorf("leftovers next to the binary: %v", entries)
	}
}

// A key built into the binary verifies releases without any config key.
func TestUpdatePinnedKey(t *testing.T) {
	bin := binaryV010Pinned(t)
	rs := newReleaseServer(t, pinnedPriv)
	target := install(t, bin)
	got := runBin(t, bin, updateConfig(t, rs.URL, ""), rs.CertFile, "update", "--binary", target)
	want := run{Stdout: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n" +
		"verified " + rs.Archive + ": minisign signature by key " + keyID(pinnedPub) + " (built into this binary)\n" +
		"updated to v0.2.0\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	if after, _ := os.ReadFile(target); string(after) != rs.Binary {
		t.Errorf("binary not replaced: %.200q", after)
	}
}

// A release whose signature is missing, by another key or does not match
// is refused before anything downloaded is run or installed.
func TestUpdateBadSignatureLeavesBinary(t *testing.T) {
	pub, priv, err := minisign.GenerateKey(nil)
	must(t, err)
	otherPub, otherPriv, err := minisign.GenerateKey(nil)
	must(t, err)
	cases := []struct {
		name    string
		tamper  func(rs *releaseServer)
		wantErr string
	}{
		{"missing", func(rs *releaseServer) { rs.signature = nil },
			"Error: release v0.2.0 has no signature ARCHIVE.minisig; refusing to install an unsigned binary\n"},
		{"another key", func(rs *releaseServer) { rs.signature = signArchive(otherPriv, rs.Archive, rs.archive) },
			"Error: ARCHIVE is signed by key " + keyID(otherPub) + ", not by the trusted key " + keyID(pub) + " (update.public_key in CONFIG); not installing\n"},
		{"archive altered", func(rs *releaseServer) { rs.archive = append(rs.archive, 0) },
			"Error: signature of ARCHIVE does not verify against key " + keyID(pub) + " (update.public_key in CONFIG): the archive or its signature was altered; not installing\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := newReleaseServer(t, priv)
			tc.tamper(rs)
			cfg := updateConfig(t, rs.URL, keyLine(pub))
			target := install(t, binaryV010(t))
			before, _ := os.ReadFile(target)

			got := runBin(t, binaryV010(t), cfg, rs.CertFile, "update", "--binary", target)
			want := run{Stdout: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n",
				Stderr: strings.NewReplacer("ARCHIVE", rs.Archive, "CONFIG", cfg).Replace(tc.wantErr), Code: 1}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("update (-want +got):\n%s", diff)
			}
			if after, _ := os.ReadFile(target); !bytes.Equal(before, after) {
				t.Error("binary changed")
			}
			if rs.ran() {
				t.Error("the downloaded binary was run")
			}
		})
	}
}

// Without a key, --check works and update installs nothing.
func TestUpdateWithoutKey(t *testing.T) {
	_, priv, err := minisign.GenerateKey(nil)
	must(t, err)
	rs := newReleaseServer(t, priv)
	cfg := updateConfig(t, rs.URL, "")
	target := install(t, binaryV010(t))
	before, _ := os.ReadFile(target)

	got := runBin(t, binaryV010(t), cfg, rs.CertFile, "update", "--check")
	if diff := cmp.Diff(run{Stdout: "current: v0.1.0, latest: v0.2.0\n"}, got); diff != "" {
		t.Errorf("update --check (-want +got):\n%s", diff)
	}
	got = runBin(t, binaryV010(t), cfg, rs.CertFile, "update", "--binary", target)
	want := run{Stdout: "current: v0.1.0, latest: v0.2.0\n",
		Stderr: "Error: refusing to install v0.2.0: no release signing key is configured, so the download cannot be verified; " +
			"set update.public_key in " + cfg + " to the minisign public key that signs podspawn releases " +
			"(the RW... line of its minisign.pub) and re-run (podspawn update --check works without one)\n", Code: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(before, after) || len(rs.downloaded()) != 0 || rs.ran() {
		t.Errorf("binary changed, downloaded %v or ran", rs.downloaded())
	}
}

// A plain http base URL is refused before any request, --check included.
func TestUpdateRefusesPlainHTTP(t *testing.T) {
	var mu sync.Mutex
	hits := 0
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		http.NotFound(w, r)
	}))
	defer plain.Close()
	for _, args := range [][]string{{"update", "--check"}, {"update", "--binary", install(t, binaryV010(t))}} {
		got := runBin(t, binaryV010(t), updateConfig(t, plain.URL, ""), "", args...)
		want := run{Stderr: "Error: checking for updates: refusing " + plain.URL + "/repos/podspawn/podspawn/releases/latest: " +
			"not an https:// URL (update.base_url and release downloads must use https)\n", Code: 1}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%v (-want +got):\n%s", args, diff)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 0 {
		t.Errorf("%d requests over plain http", hits)
	}
}

func TestUpdateServerErrorAndDevBuild(t *testing.T) {
	broken := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	certFile := filepath.Join(t.TempDir(), "cert.pem")
	must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: broken.Certificate().Raw}), 0o644))
	target := install(t, binaryV010(t))
	before, _ := os.ReadFile(target)

	got := runBin(t, binaryV010(t), updateConfig(t, broken.URL, ""), certFile, "update", "--binary", target)
	want := run{Stderr: "Error: checking for updates: GET " + broken.URL + "/repos/podspawn/podspawn/releases/latest: HTTP 500 Internal Server Error\n", Code: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("server error (-want +got):\n%s", diff)
	}

	// harness.Binary is an unstamped development build.
	pub, priv, err := minisign.GenerateKey(nil)
	must(t, err)
	rs := newReleaseServer(t, priv)
	got = runBin(t, harness.Binary(t), updateConfig(t, rs.URL, keyLine(pub)), rs.CertFile, "update", "--binary", target)
	want = run{Stdout: "current: dev (development build; not a release), latest: v0.2.0\n",
		Stderr: "Error: not replacing a development build; re-run with --force to install v0.2.0 over it\n", Code: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dev build (-want +got):\n%s", diff)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(before, after) {
		t.Error("binary changed")
	}
}
