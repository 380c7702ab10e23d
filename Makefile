# Entry points. `make demo` and `make test` work on a fresh Debian 12 machine as root.
CARGO ?= cargo
# Each step of `make test` prints its wall time ("# timed: ..."; scripts/timed).
TIMED := scripts/timed
export CARGO_TERM_COLOR ?= never

.PHONY: demo test deps lint unit loom vmtest test-deb test-multinode torture-soak bench bench-rdma clean

demo: deps
	$(CARGO) run --release -q -p regcache-cli -- demo

deps:
	@scripts/deps.sh

lint: deps
	$(TIMED) $(CARGO) fmt --all -- --check
	$(TIMED) $(CARGO) clippy --workspace --all-targets --release -- -D warnings

# Host tests: unit tests, the torture oracle (>= 100,000 operations on userfaultfd) and its
# negative control, then the demo in both modes.
unit: deps
	$(TIMED) $(CARGO) test --workspace --release
	$(TIMED) $(CARGO) test --release -p regcache --features verbs --lib registrar::verbs
	$(TIMED) $(CARGO) run --release -q -p regcache-cli -- demo --iterations 100
	$(TIMED) $(CARGO) run --release -q -p regcache-cli -- demo --iterations 100 --no-invalidation
	$(TIMED) ffi/tests/run-c-tests.sh
	$(TIMED) exporter/tests/prometheus-e2e.sh
	$(TIMED) $(MAKE) -C mpi-shim check
	$(TIMED) ops/check.sh

# The loom models of the hold-cell protocol (regcache/src/cache/loom_model.rs); its own target
# dir, since --cfg loom rebuilds every dependency.
loom: deps
	$(TIMED) env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom $(CARGO) test -p regcache --release --lib loom_model

# Guest tests under qemu (TCG) on Debian's 6.1 and 6.12 kernels: the module's own suite, the
# oracle and the demo with the ummunotify monitor, doctor, and the two-process RDMA test over
# Soft-RoCE with both monitors and the negative control, the shim, the libfabric bridge, the
# Debian packages installed in the 6.12 guest (vmtest/test-deb.sh: the packages `unit` built with
# ops/check.sh; their module sources built natively for both kernels; the 6.1 guest weekly, see
# .ci/run), and the MPI stacks matrix (Open MPI 4.1/5, MPICH 5, Intel MPI over UCX and
# libfabric, under the shim with its negative controls; 6.12 only, see vmtest/test-stacks.sh)
# (vmtest/README.md). vmtest/test-ucx.sh (Open MPI 4.1 + UCX 1.13 alone) is covered by the
# matrix's ompi4-ucx cells.
vmtest: deps
	$(TIMED) vmtest/setup.sh
	$(TIMED) vmtest/test-kmod.sh
	$(TIMED) vmtest/test-regcache.sh
	$(TIMED) vmtest/test-doctor.sh
	$(TIMED) vmtest/test-rdma.sh
	$(TIMED) vmtest/test-shim.sh
	$(TIMED) vmtest/test-ofi.sh
	$(TIMED) vmtest/test-deb.sh --kernels 6.12
	$(TIMED) vmtest/test-stacks.sh

# The Debian packages built (ops/check.sh, into target/debs/) and installed in both guests:
# dkms builds the module; doctor, the C ABI suite and the shim's RDMA test run against the
# installed files; purge leaves nothing behind.
test-deb: deps
	ops/check.sh
	vmtest/test-deb.sh

# Two nodes at once (node1 on 6.12, node2 on 6.1, one vCPU each) on one virtual link, Soft-RoCE
# on each, Slurm (slurmctld + slurmd, munge) launching Open MPI 4.1 + UCX ranks with
# `srun --mpi=pmix` under the shim: ib_write_bw, mpi_reuse and its negative control, the
# per-node textfiles through node_exporter into Prometheus, a rank killed mid-run
# (vmtest/test-multinode.sh; 400-700 s on 2 cores). Not in `make test` (CI budget): .ci/run
# runs it after `make test` on Sundays (UTC) and whenever REGCACHE_CI_MULTINODE=1.
test-multinode: deps
	vmtest/setup.sh
	vmtest/test-multinode.sh

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
