# Entry points. `make demo` and `make test` work on a fresh Debian 12 machine as root.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: demo test deps lint unit loom vmtest torture-soak bench bench-rdma clean

demo: deps
	$(CARGO) run --release -q -p regcache-cli -- demo

deps:
	@scripts/deps.sh

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

# Host tests: unit tests, the torture oracle (>= 100,000 operations on userfaultfd) and its
# negative control, then the demo in both modes.
unit: deps
	$(CARGO) test --workspace --release
	$(CARGO) test --release -p regcache --features verbs --lib registrar::verbs
	$(CARGO) run --release -q -p regcache-cli -- demo --iterations 100
	$(CARGO) run --release -q -p regcache-cli -- demo --iterations 100 --no-invalidation
	ffi/tests/run-c-tests.sh
	exporter/tests/prometheus-e2e.sh
	$(MAKE) -C mpi-shim check

# The loom models of the hold-cell protocol (regcache/src/cache/loom_model.rs); its own target
# dir, since --cfg loom rebuilds every dependency.
loom: deps
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test -p regcache --release --lib loom_model

# Guest tests under qemu (TCG) on Debian's 6.1 and 6.12 kernels: the module's own suite, the
# oracle and the demo with the ummunotify monitor, doctor, and the two-process RDMA test over
# Soft-RoCE with both monitors and the negative control, the shim, the libfabric and UCX
# bridges (the UCX one with Open MPI, on 6.12 only: see vmtest/test-ucx.sh) (vmtest/README.md).
vmtest: deps
	vmtest/setup.sh
	vmtest/test-kmod.sh
	vmtest/test-regcache.sh
	vmtest/test-doctor.sh
	vmtest/test-rdma.sh
	vmtest/test-shim.sh
	vmtest/test-ofi.sh
	vmtest/test-ucx.sh

test: lint unit loom vmtest

torture-soak: deps
	$(CARGO) run --release -p regcache-cli -- torture --ops 1000000

bench: deps
	$(CARGO) bench -p regcache-benches

# Registration cost and transfer throughput over Soft-RoCE in the guests (docs/bench-rdma.md).
bench-rdma: deps
	vmtest/setup.sh
	vmtest/test-rdma.sh --bench

clean:
	$(CARGO) clean
