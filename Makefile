# dstack-vpc: nginx mesh module, control daemon, guest-agent simulator.
#
#   make deps    install the Debian packages every target needs
#   make         build everything into build/
#   make test    build, then run every test (one summary line at the end)
#   make demo    a local VPC in network namespaces, step by step (ONCE=1: then exit;
#                VPC_UDP=off: UDP between the CVMs blocked, WireGuard over the relay)
#   make image   the container image, with podman (mk/image.mk)
#   make deb     the Debian packages (mk/deb.mk, debian/)
#   make test-image   both, run and installed (tests/image/)

SHELL       := /bin/bash
ROOT        := $(CURDIR)
BUILD       := $(ROOT)/build
BIN         := $(BUILD)/bin

CC          ?= cc
WARN        := -Wall -Wextra -Werror
CFLAGS      ?= -O2 -g
C11         := -std=c11 -D_GNU_SOURCE $(WARN) -Icommon

OPENSSL_LIBS := -lssl -lcrypto

.PHONY: build all deps test clean demo

# "make": the packages first, then everything
build: deps
	$(MAKE) all

all:

include mk/deps.mk
include mk/common.mk
include mk/module.mk
include mk/image.mk
include mk/deb.mk
include dstack-ctld/wg.mk
include $(sort $(wildcard */build.mk tools/*/build.mk tests/*/build.mk))

# Every test through one TAP::Harness run (tests/run): prove's report, the
# files that skipped and why, then "tests: N passed, N failed, N skipped".
# Under CI=true a skipped file fails the run.
TEST_CERTS  := $(BUILD)/test-certs
NGX_STREAM_SO := /usr/lib/nginx/modules/ngx_stream_module.so
TEST_ENV    := TEST_NGINX_BINARY=/usr/sbin/nginx \
               TEST_NGINX_LOAD_MODULES="$(NGX_STREAM_SO) $(MODULE_SO)" \
               TEST_NGINX_CERT_DIR=$(TEST_CERTS) \
               DSTACK_BIN=$(BIN)

test: deps
	$(MAKE) all
	$(MAKE) fuzz
	t/certs.sh $(TEST_CERTS)
	$(TEST_ENV) tests/run $(PROVE_FLAGS) $(UNIT_TESTS) tests/*.t t/*.t

# The daemon and the simulator built with AddressSanitizer and UBSan into
# build/asan, and the suites that drive them run against those builds.  A
# sanitizer report anywhere (a daemon that went on, or one that died at
# exit) lands in build/asan/reports and fails the target.
ASAN_BUILD  := $(BUILD)/asan
ASAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
               -fno-sanitize-recover=all
ASAN_TESTS  := tests/agent-sim.t tests/ctld-*.t
ASAN_ENV    := ASAN_OPTIONS=log_path=$(ASAN_BUILD)/reports/asan:detect_leaks=1 \
               UBSAN_OPTIONS=log_path=$(ASAN_BUILD)/reports/ubsan:print_stacktrace=1 \
               DSTACK_BIN=$(ASAN_BUILD)/bin

.PHONY: test-asan
test-asan: deps
	$(MAKE) BUILD=$(ASAN_BUILD) CFLAGS="$(ASAN_CFLAGS)" \
	    LDFLAGS="-fsanitize=address,undefined" ctld agent-sim
	rm -rf $(ASAN_BUILD)/reports && mkdir -p $(ASAN_BUILD)/reports
	$(ASAN_ENV) tests/run $(ASAN_TESTS)
	@if ls $(ASAN_BUILD)/reports/* >/dev/null 2>&1; then \
	    head -60 $(ASAN_BUILD)/reports/*; \
	    echo "sanitizer reports in $(ASAN_BUILD)/reports"; exit 1; \
	fi

# The main job: a local VPC, told step by step (tests/vpc/demo.sh); runs
# until Ctrl-C, or ONCE=1 to tear down and exit with the result.
demo: deps
	$(MAKE) all
	ONCE=$(ONCE) VPC_UDP=$(VPC_UDP) DSTACK_BIN=$(BIN) tests/vpc/demo.sh

# Side-by-side ratios against the plain-nginx baseline (bench/README.md);
# not part of make test.
.PHONY: bench
bench: deps
	bench/run

clean:
	rm -rf $(BUILD) t/servroot
