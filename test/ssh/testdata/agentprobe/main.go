// Command agentprobe proves, in a session container with busybox only (no
// unix-socket client), that the agent at $SSH_AUTH_SOCK answers: it lists
// the keys and has each sign a challenge, which it verifies, printing
// "key <fingerprint> signed" per key. Built static by the tests.
package main

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func main() {
	if err := probe(os.Getenv("SSH_AUTH_SOCK")); err != nil {
		fmt.Println("agentprobe:", err)
		os.Exit(1)
	}
}

func probe(sock string) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer c.Close()
	ac := agent.NewClient(c)
	keys, err := ac.List()
	if err != nil {
		return err
	}
	challenge := []byte("podspawn agent probe")
	for _, k := range keys {
		pub, err := ssh.ParsePublicKey(k.Blob)
		if err != nil {
			return err
		}
		sig, err := ac.Sign(pub, challenge)
		if err != nil {
			return fmt.Errorf("signing with %s: %w", ssh.FingerprintSHA256(pub), err)
		}
		if err := pub.Verify(challenge, sig); err != nil {
			return fmt.Errorf("signature of %s: %w", ssh.FingerprintSHA256(pub), err)
		}
		fmt.Printf("key %s signed\n", ssh.FingerprintSHA256(pub))
	}
	return nil
}
