# Convenience targets; the scripts in hack/ are the source of truth.
.PHONY: build test demo verify bench

build:
	go build -o bin/podspawn ./cmd
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o bin/podspawn-agentrelay ./cmd/agentrelay

test:
	bash hack/test.sh

demo:
	bash hack/demo.sh

verify:
	bash hack/verify.sh

bench:
	go test -run '^$$' -bench . -benchmem ./reconcile/
