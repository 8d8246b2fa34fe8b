// Package selfupdate replaces the podspawn binary with the latest release. The
// release server is not trusted: every URL must be https://, and the
// archive must carry a minisign signature by the pinned or configured key
// before it is unpacked, let alone run. The installed binary is touched
// only after the archive has been downloaded, verified, unpacked and
// test-run; then one rename swaps it in, so every failure before that
// leaves the old binary byte-identical.
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
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"aead.dev/minisign"
	"golang.org/x/mod/semver"
)

const (
	apiTimeout       = 10 * time.Second
	signatureTimeout = 30 * time.Second
	assetTimeout     = 5 * time.Minute
	// Limits keep a broken or hostile server from filling memory.
	maxAPIBytes       = 4 << 20
	maxSignatureBytes = 64 << 10
	maxArchiveBytes   = 512 << 20
	maxBinaryBytes    = 512 << 20
	// SignatureSuffix names an archive's detached signature, as
	// "minisign -S -m <archive>" writes it.
	SignatureSuffix = ".minisig"
)

// Release is the part of the GitHub releases API answer we use.
type Release struct {
	TagName string  `json:"tag_name"`
	Assets  []Asset `json:"assets"`
}

// Asset is one file of a release.
type Asset struct {
	Name string `json:"name"`
	URL  string `json:"browser_download_url"`
}

// Client talks to a GitHub-compatible releases API.
type Client struct {
	HTTP *http.Client
	// BaseURL is e.g. https://api.github.com; Repo is owner/name.
	BaseURL string
	Repo    string
	// UserAgent identifies us (GitHub rejects requests without one).
	UserAgent string
	// AllowInsecureHTTP accepts http:// URLs: update.allow_insecure_http,
	// for tests only. Off, every URL and redirect must be https://.
	AllowInsecureHTTP bool
}

// Latest fetches the latest release.
func (c *Client) Latest(ctx context.Context) (Release, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	url := strings.TrimRight(c.BaseURL, "/") + "/repos/" + c.Repo + "/releases/latest"
	body, err := c.get(ctx, url, "application/vnd.github+json", maxAPIBytes)
	if err != nil {
		return Release{}, fmt.Errorf("checking for updates: %w", err)
	}
	var rel Release
	if err := json.Unmarshal(body, &rel); err != nil {
		return Release{}, fmt.Errorf("checking for updates: %s returned invalid JSON: %w", url, err)
	}
	if rel.TagName == "" {
		return Release{}, fmt.Errorf("checking for updates: %s returned no tag_name", url)
	}
	return rel, nil
}

// checkScheme refuses plain http: on it anyone on the path could answer
// "latest" or serve the download (the signature still guards the install,
// but not what --check reports).
func (c *Client) checkScheme(u *url.URL) error {
	if u.Scheme == "https" || (u.Scheme == "http" && c.AllowInsecureHTTP) {
		return nil
	}
	return fmt.Errorf("refusing %s: not an https:// URL (update.base_url and release downloads must use https)", u.Redacted())
}

func (c *Client) get(ctx context.Context, url, accept string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if err := c.checkScheme(req.URL); err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	hc := http.Client{}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	// A redirect is another URL the server chose: hold it to https too.
	next := hc.CheckRedirect
	hc.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if err := c.checkScheme(r.URL); err != nil {
			return err
		}
		if next != nil {
			return next(r, via)
		}
		if len(via) >= 10 { // net/http's default limit
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := ""
		// GitHub explains rate limits and the like in {"message": ...}.
		var e struct {
			Message string `json:"message"`
		}
		if b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10)); json.Unmarshal(b, &e) == nil && e.Message != "" {
			msg = ": " + e.Message
		}
		return nil, fmt.Errorf("GET %s: HTTP %s%s", url, resp.Status, msg)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: response larger than %d bytes", url, limit)
	}
	return body, nil
}

// Verdict is how the running version relates to the latest release.
type Verdict int

const (
	// UpToDate: same version.
	UpToDate Verdict = iota
	// Available: the latest release is newer.
	Available
	// Newer: the running version is newer than the latest release; never
	// offer a downgrade.
	Newer
	// Unversioned: a development build ("dev") or a version that is not
	// semver, which cannot be ordered against a release.
	Unversioned
)

// Canonical returns v as a "v"-prefixed semantic version, accepting the
// unprefixed form release tooling writes ("0.1.0"), or "" if v is not one.
func Canonical(v string) string {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	if !semver.IsValid(v) {
		return ""
	}
	return v
}

// Compare orders current against the latest tag, which must be semver.
func Compare(current, latest string) (Verdict, error) {
	l := Canonical(latest)
	if l == "" {
		return 0, fmt.Errorf("latest release tag %q is not a semantic version; not updating", latest)
	}
	c := Canonical(current)
	if c == "" {
		return Unversioned, nil
	}
	switch semver.Compare(c, l) {
	case 0:
		return UpToDate, nil
	case -1:
		return Available, nil
	}
	return Newer, nil
}

// AssetName is the release archive for a platform, e.g.
// podspawn_0.2.0_linux_amd64.tar.gz for tag v0.2.0.
func AssetName(tag, goos, goarch string) string {
	return fmt.Sprintf("podspawn_%s_%s_%s.tar.gz", strings.TrimPrefix(tag, "v"), goos, goarch)
}

func findAsset(rel Release, name string) (Asset, bool) {
	for _, a := range rel.Assets {
		if a.Name == name {
			return a, true
		}
	}
	return Asset{}, false
}

// Key is the minisign public key release archives must be signed with.
type Key struct {
	pub minisign.PublicKey
	// Source says where the key came from, for messages.
	Source string
}

// ParseKey reads a minisign public key: the base64 line ("RW...") or a
// whole minisign.pub file.
func ParseKey(text, source string) (*Key, error) {
	var pub minisign.PublicKey
	if err := pub.UnmarshalText([]byte(strings.TrimSpace(text))); err != nil {
		return nil, fmt.Errorf("%s is not a minisign public key (%v)", source, err)
	}
	return &Key{pub: pub, Source: source}, nil
}

// ID is the key ID as minisign prints it.
func (k *Key) ID() string { return keyID(k.pub.ID()) }

func keyID(id uint64) string { return fmt.Sprintf("%016X", id) }

// Verified is a release binary from an archive whose signature checked
// out. Only Download makes one, so Install can neither run nor install
// bytes that were not verified.
type Verified struct {
	bin []byte
	// Archive is the file the signature covers; KeyID the key it verified
	// against.
	Archive string
	KeyID   string
}

// Download fetches the platform's archive of rel and its detached
// signature <archive>.minisig, verifies the signature with key and returns
// the podspawn binary the archive contains. Nothing is written to disk and
// the archive is not even unpacked before the signature is verified.
func (c *Client) Download(ctx context.Context, rel Release, goos, goarch string, key *Key) (Verified, error) {
	name := AssetName(rel.TagName, goos, goarch)
	asset, ok := findAsset(rel, name)
	if !ok {
		return Verified{}, fmt.Errorf("release %s has no %s for %s/%s", rel.TagName, name, goos, goarch)
	}
	sigAsset, ok := findAsset(rel, name+SignatureSuffix)
	if !ok {
		return Verified{}, fmt.Errorf("release %s has no signature %s%s; refusing to install an unsigned binary", rel.TagName, name, SignatureSuffix)
	}
	sctx, cancel := context.WithTimeout(ctx, signatureTimeout)
	sig, err := c.get(sctx, sigAsset.URL, "", maxSignatureBytes)
	cancel()
	if err != nil {
		return Verified{}, fmt.Errorf("downloading %s%s: %w", name, SignatureSuffix, err)
	}
	actx, cancel := context.WithTimeout(ctx, assetTimeout)
	defer cancel()
	archive, err := c.get(actx, asset.URL, "application/octet-stream", maxArchiveBytes)
	if err != nil {
		return Verified{}, fmt.Errorf("downloading %s: %w", name, err)
	}
	if err := verify(key, name, archive, sig); err != nil {
		return Verified{}, err
	}
	bin, err := extractBinary(archive)
	if err != nil {
		return Verified{}, fmt.Errorf("%s: %w", name, err)
	}
	return Verified{bin: bin, Archive: name, KeyID: key.ID()}, nil
}

// verify checks that sig is key's minisign signature of archive and that
// its trusted (signed) comment names the archive, as minisign's default
// "timestamp:<t>\tfile:<name>" does: the release server chooses which file
// it serves under which name, so without this it could serve an older
// signed archive as the latest release.
func verify(key *Key, name string, archive, sig []byte) error {
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return fmt.Errorf("%s%s is not a minisign signature (%v); not installing", name, SignatureSuffix, err)
	}
	if s.KeyID != key.pub.ID() {
		return fmt.Errorf("%s is signed by key %s, not by the trusted key %s (%s); not installing", name, keyID(s.KeyID), key.ID(), key.Source)
	}
	if !minisign.Verify(key.pub, archive, sig) {
		return fmt.Errorf("signature of %s does not verify against key %s (%s): the archive or its signature was altered; not installing", name, key.ID(), key.Source)
	}
	for _, f := range strings.Split(s.TrustedComment, "\t") {
		if f == "file:"+name {
			return nil
		}
	}
	return fmt.Errorf("signature of %s is valid but its trusted comment %q does not name file:%s; not installing", name, s.TrustedComment, name)
}

// extractBinary returns the regular file "podspawn" at the archive root.
func extractBinary(archive []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		return nil, fmt.Errorf("not a gzip archive: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no podspawn binary at the archive root")
		}
		if err != nil {
			return nil, fmt.Errorf("reading archive: %w", err)
		}
		if path.Clean(strings.TrimPrefix(h.Name, "./")) != "podspawn" {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("podspawn in the archive is not a regular file (type %q)", h.Typeflag)
		}
		if h.Size <= 0 || h.Size > maxBinaryBytes {
			return nil, fmt.Errorf("podspawn in the archive has an implausible size (%d bytes)", h.Size)
		}
		bin, err := io.ReadAll(io.LimitReader(tr, maxBinaryBytes))
		if err != nil {
			return nil, fmt.Errorf("reading podspawn from the archive: %w", err)
		}
		return bin, nil
	}
}

// Install writes the verified binary next to target, makes sure it runs and
// reports want as its version, and renames it over target. Any failure
// removes the temporary file and leaves target as it was.
func Install(ctx context.Context, target string, v Verified, want string) (err error) {
	bin := v.bin
	if len(bin) == 0 {
		return errors.New("no verified binary to install")
	}
	dir := filepath.Dir(target)
	f, err := os.CreateTemp(dir, "."+filepath.Base(target)+".new-*")
	if err != nil {
		return fmt.Errorf("cannot write next to %s: %w (run as root: sudo podspawn update)", target, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(bin); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	// Every SSH login runs this binary: one that does not start on this
	// machine (wrong architecture, truncated) would lock everyone out.
	if err := selfTest(ctx, tmp, want); err != nil {
		return err
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("replacing %s: %w", target, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func selfTest(ctx context.Context, bin, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out []byte
	var err error
	for range 3 {
		cmd := exec.CommandContext(ctx, bin, "version")
		cmd.WaitDelay = time.Second
		out, err = cmd.CombinedOutput()
		// A concurrent fork may briefly hold the file we just wrote open
		// for writing (golang/go#22315).
		if !errors.Is(err, syscall.ETXTBSY) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("the downloaded binary does not run here (%v: %s); not installing", err, strings.TrimSpace(string(out)))
	}
	for _, f := range strings.Fields(string(out)) {
		if Canonical(f) == Canonical(want) {
			return nil
		}
	}
	return fmt.Errorf("the downloaded binary reports version %q, expected %s; not installing", strings.TrimSpace(string(out)), want)
}

// Options of one update run.
type Options struct {
	// Current is the running version (main.version).
	Current string
	// Check stops after reporting the versions.
	Check bool
	// Force replaces a development or non-semver build.
	Force bool
	// Target is the binary to replace (symlinks resolved by the caller).
	Target string
	GOOS   string
	GOARCH string
	// Key verifies the release; nil means none is configured, and then
	// only Check can succeed.
	Key *Key
	// ConfigPath is named in the message that says how to configure a key.
	ConfigPath string
}

// ErrDevBuild is returned when a development build would be replaced
// without Force.
var ErrDevBuild = errors.New("not replacing a development build")

// ErrNoKey is returned when an install is asked for without a key to
// verify the release with.
var ErrNoKey = errors.New("no release signing key is configured")

// Run checks for a newer release and, unless o.Check, installs it. It
// prints the admin-commands lines to out and reports whether it replaced
// the binary.
func Run(ctx context.Context, c *Client, o Options, out io.Writer) (installed bool, err error) {
	rel, err := c.Latest(ctx)
	if err != nil {
		return false, err
	}
	verdict, err := Compare(o.Current, rel.TagName)
	if err != nil {
		return false, err
	}
	latest := rel.TagName
	switch verdict {
	case UpToDate:
		fmt.Fprintf(out, "already on latest version (%s)\n", latest)
		return false, nil
	case Newer:
		fmt.Fprintf(out, "current version %s is newer than the latest release (%s); not downgrading\n", Canonical(o.Current), latest)
		return false, nil
	case Unversioned:
		fmt.Fprintf(out, "current: %s (development build; not a release), latest: %s\n", o.Current, latest)
		if o.Check {
			return false, nil
		}
		if !o.Force {
			return false, fmt.Errorf("%w; re-run with --force to install %s over it", ErrDevBuild, latest)
		}
	case Available:
		fmt.Fprintf(out, "current: %s, latest: %s\n", Canonical(o.Current), latest)
		if o.Check {
			return false, nil
		}
	}
	if o.Key == nil {
		return false, fmt.Errorf("refusing to install %s: %w, so the download cannot be verified; set update.public_key in %s "+
			"to the minisign public key that signs podspawn releases (the RW... line of its minisign.pub) and re-run "+
			"(podspawn update --check works without one)", latest, ErrNoKey, o.ConfigPath)
	}
	if err := checkWritable(filepath.Dir(o.Target)); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "downloading %s...\n", latest)
	v, err := c.Download(ctx, rel, o.GOOS, o.GOARCH, o.Key)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(out, "verified %s: minisign signature by key %s (%s)\n", v.Archive, v.KeyID, o.Key.Source)
	if err := Install(ctx, o.Target, v, latest); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "updated to %s\n", latest)
	return true, nil
}

// checkWritable fails early, before a download, when the binary's
// directory cannot take the new file.
func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".podspawn-update-check-*")
	if err != nil {
		return fmt.Errorf("cannot write to %s: %w (run as root: sudo podspawn update)", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}
