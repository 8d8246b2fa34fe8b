package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// An unopenable log.file must not fail the login: spawn logs to its
// default destination and says there what to fix.
func TestSpawnLoggerFallsBack(t *testing.T) {
	var buf bytes.Buffer
	a := &App{CLI: &CLI{Config: "/etc/podspawn/config.yaml", Verbosity: 1}, Log: newLogger("text", 1, &buf)}
	file := filepath.Join(t.TempDir(), "missing", "spawn.log")
	log, closeLog := spawnLogger(a, file)
	defer closeLog()
	log.Info("After fallback")
	got := buf.String()
	for _, want := range []string{
		"Cannot open log.file, logging here instead",
		file,
		"create the directory or unset log.file in /etc/podspawn/config.yaml",
		"After fallback",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
}
