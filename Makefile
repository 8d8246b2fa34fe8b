# Convenience targets; the scripts in hack/ are the source of truth.
.PHONY: build test demo verify bench

build:
	go build -o bin/podspawn ./cmd

test:
	bash hack/test.sh

demo:
	bash hack/demo.sh

verify:
	bash hack/verify.sh

bench:
	go test -run '^$$' -bench . -benchmem ./reconcile/
