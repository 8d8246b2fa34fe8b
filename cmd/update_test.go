package main

import (
	"strings"
	"testing"

	"aead.dev/minisign"
)

// The config's key replaces the built-in one; without either there is none.
func TestUpdateKey(t *testing.T) {
	pubA, _, _ := minisign.GenerateKey(nil)
	pubB, _, _ := minisign.GenerateKey(nil)
	a, b := pubA.String(), pubB.String()
	idOf := func(p minisign.PublicKey) string {
		k, err := updateKey(p.String(), "", "/c")
		if err != nil {
			t.Fatal(err)
		}
		return k.ID()
	}
	cases := []struct {
		name, configured, builtIn string
		wantID, wantSource        string
	}{
		{"config only", a, "", idOf(pubA), "update.public_key in /etc/podspawn/config.yaml"},
		{"built in only", "", b, idOf(pubB), "built into this binary"},
		{"config wins", a, b, idOf(pubA), "update.public_key in /etc/podspawn/config.yaml"},
		{"neither", "  ", "", "", ""},
	}
	for _, tc := range cases {
		k, err := updateKey(tc.configured, tc.builtIn, "/etc/podspawn/config.yaml")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		gotID, gotSource := "", ""
		if k != nil {
			gotID, gotSource = k.ID(), k.Source
		}
		if gotID != tc.wantID || gotSource != tc.wantSource {
			t.Errorf("%s: key %s from %q, want %s from %q", tc.name, gotID, gotSource, tc.wantID, tc.wantSource)
		}
	}
	if _, err := updateKey("RWQ-nope", b, "/etc/podspawn/config.yaml"); err == nil ||
		!strings.HasPrefix(err.Error(), "update.public_key in /etc/podspawn/config.yaml is not a minisign public key") {
		t.Errorf("bad configured key: err = %v", err)
	}
}
