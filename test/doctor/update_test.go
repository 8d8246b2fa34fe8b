package doctor_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podspawn/podspawn/test/harness"
)

var (
	v010Once sync.Once
	v010Dir  string
	v010Err  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if v010Dir != "" {
		os.RemoveAll(v010Dir)
	}
	os.Exit(code)
}

// binaryV010 builds podspawn stamped v0.1.0, as a release build is.
func binaryV010(t *testing.T) string {
	t.Helper()
	v010Once.Do(func() {
		v010Dir, v010Err = os.MkdirTemp("", "podspawn-v010-")
		if v010Err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version=v0.1.0", "-o", filepath.Join(v010Dir, "podspawn"), "./cmd")
		cmd.Dir = harness.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			v010Err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if v010Err != nil {
		t.Fatal(v010Err)
	}
	return filepath.Join(v010Dir, "podspawn")
}

// releaseServer is a GitHub-like release v0.2.0 whose binary is a script
// that reports v0.2.0.
type releaseServer struct {
	*httptest.Server
	mu        sync.Mutex
	checksums string
	downloads []string
}

const newBinary = "#!/bin/sh\necho v0.2.0\n"

func newReleaseServer(t *testing.T) *releaseServer {
	t.Helper()
	name := fmt.Sprintf("podspawn_0.2.0_%s_%s.tar.gz", runtime.GOOS, runtime.GOARCH)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "podspawn", Mode: 0o755, Size: int64(len(newBinary)), Typeflag: tar.TypeReg})
	tw.Write([]byte(newBinary))
	tw.Close()
	zw.Close()
	archive := buf.Bytes()
	sum := sha256.Sum256(archive)
	rs := &releaseServer{checksums: hex.EncodeToString(sum[:]) + "  " + name + "\n"}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		switch r.URL.Path {
		case "/repos/podspawn/podspawn/releases/latest":
			json.NewEncoder(w).Encode(map[string]any{"tag_name": "v0.2.0", "assets": []map[string]string{
				{"name": name, "browser_download_url": rs.URL + "/dl/" + name},
				{"name": "checksums.txt", "browser_download_url": rs.URL + "/dl/checksums.txt"},
			}})
		case "/dl/" + name:
			rs.downloads = append(rs.downloads, name)
			w.Write(archive)
		case "/dl/checksums.txt":
			rs.downloads = append(rs.downloads, "checksums.txt")
			w.Write([]byte(rs.checksums))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *releaseServer) downloaded() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]string(nil), rs.downloads...)
}

func (rs *releaseServer) setChecksums(s string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.checksums = s
}

type run struct {
	Stdout, Stderr string
	Code           int
}

func runBin(t *testing.T, bin, configPath string, args ...string) run {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--config", configPath}, args...)...)
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

func updateConfig(t *testing.T, baseURL string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	must(t, os.WriteFile(p, []byte("update:\n  base_url: "+baseURL+"\n  repo: podspawn/podspawn\n"), 0o644))
	return p
}

func TestUpdateCheckThenReplaceItself(t *testing.T) {
	rs := newReleaseServer(t)
	cfg := updateConfig(t, rs.URL)
	self := install(t, binaryV010(t))
	before, _ := os.ReadFile(self)

	got := runBin(t, self, cfg, "update", "--check")
	if diff := cmp.Diff(run{Stdout: "current: v0.1.0, latest: v0.2.0\n"}, got); diff != "" {
		t.Errorf("update --check (-want +got):\n%s", diff)
	}
	if after, _ := os.ReadFile(self); !bytes.Equal(before, after) || len(rs.downloaded()) != 0 {
		t.Fatalf("--check changed the binary or downloaded %v", rs.downloaded())
	}

	// No --binary: the running executable replaces itself.
	got = runBin(t, self, cfg, "update")
	if diff := cmp.Diff(run{Stdout: "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\nupdated to v0.2.0\n"}, got); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	after, _ := os.ReadFile(self)
	fi, err := os.Stat(self)
	must(t, err)
	if string(after) != newBinary || fi.Mode().Perm() != 0o755 {
		t.Errorf("binary after update: mode %v, content %q", fi.Mode().Perm(), after)
	}
	entries, _ := os.ReadDir(filepath.Dir(self))
	if len(entries) != 1 {
		t.Errorf("leftovers next to the binary: %v", entries)
	}
}

func TestUpdateChecksumMismatchLeavesBinary(t *testing.T) {
	rs := newReleaseServer(t)
	rs.setChecksums(strings.Repeat("00", 32) + "  " + fmt.Sprintf("podspawn_0.2.0_%s_%s.tar.gz", runtime.GOOS, runtime.GOARCH) + "\n")
	cfg := updateConfig(t, rs.URL)
	target := install(t, binaryV010(t))
	before, _ := os.ReadFile(target)

	got := runBin(t, binaryV010(t), cfg, "update", "--binary", target)
	if got.Code != 1 || got.Stdout != "current: v0.1.0, latest: v0.2.0\ndownloading v0.2.0...\n" ||
		!strings.HasPrefix(got.Stderr, "Error: checksum mismatch for podspawn_0.2.0_") || strings.Contains(got.Stderr, "Usage") {
		t.Errorf("got %+v", got)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(before, after) {
		t.Error("binary changed after a checksum mismatch")
	}
}

func TestUpdateServerErrorAndDevBuild(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	target := install(t, binaryV010(t))
	before, _ := os.ReadFile(target)

	got := runBin(t, binaryV010(t), updateConfig(t, broken.URL), "update", "--binary", target)
	want := run{Stderr: "Error: checking for updates: GET " + broken.URL + "/repos/podspawn/podspawn/releases/latest: HTTP 500 Internal Server Error\n", Code: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("server error (-want +got):\n%s", diff)
	}

	// harness.Binary is an unstamped development build.
	rs := newReleaseServer(t)
	got = runBin(t, harness.Binary(t), updateConfig(t, rs.URL), "update", "--binary", target)
	want = run{Stdout: "current: dev (development build; not a release), latest: v0.2.0\n",
		Stderr: "Error: not replacing a development build; re-run with --force to install v0.2.0 over it\n", Code: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dev build (-want +got):\n%s", diff)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(before, after) {
		t.Error("binary changed")
	}
}
