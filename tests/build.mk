# C unit tests (TAP on stdout, run by prove) and libFuzzer targets, both with
# AddressSanitizer and UndefinedBehaviorSanitizer.

SANITIZE     := -fsanitize=address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=all
UNIT_TESTS   := $(BUILD)/tests/ratls_test $(BUILD)/tests/mesh_target_test \
                $(BUILD)/tests/parse_test $(BUILD)/tests/node_peers_test \
                $(BUILD)/tests/log_test $(BUILD)/tests/file_write_test
CTLD_FUZZERS := $(BUILD)/fuzz/fuzz_ctld_query $(BUILD)/fuzz/fuzz_ctld_join \
                $(BUILD)/fuzz/fuzz_ctld_peers $(BUILD)/fuzz/fuzz_ctld_hosts \
                $(BUILD)/fuzz/fuzz_ctld_dns $(BUILD)/fuzz/fuzz_ctld_relay
FUZZERS      := $(BUILD)/fuzz/fuzz_ratls $(BUILD)/fuzz/fuzz_mesh_target \
                $(CTLD_FUZZERS)
FUZZ_SECONDS ?= 5

.PHONY: unit-tests fuzzers fuzz
all: unit-tests fuzzers
unit-tests: $(UNIT_TESTS)
fuzzers: $(FUZZERS)

$(BUILD)/tests/ratls_test: tests/unit/ratls_test.c tests/unit/tap.h \
                           common/ratls.c common/app_id.c common/*.h
	@mkdir -p $(@D)
	$(CC) $(C11) -g -O1 $(SANITIZE) -o $@ $(filter %.c,$^) $(OPENSSL_LIBS)

$(BUILD)/tests/mesh_target_test: tests/unit/mesh_target_test.c tests/unit/tap.h \
                                 common/mesh_target.c common/app_id.c \
                                 common/parse.c common/*.h
	@mkdir -p $(@D)
	$(CC) $(C11) -g -O1 $(SANITIZE) -o $@ $(filter %.c,$^)

$(BUILD)/tests/parse_test: tests/unit/parse_test.c tests/unit/tap.h \
                           common/parse.c common/app_id.c common/*.h
	@mkdir -p $(@D)
	$(CC) $(C11) -g -O1 $(SANITIZE) -o $@ $(filter %.c,$^)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c common/*.c common/*.h
	@mkdir -p $(@D)
	clang $(C11) -g -O1 -fsanitize=fuzzer,address,undefined \
	    -o $@ $< $(wildcard common/*.c) $(OPENSSL_LIBS)

$(BUILD)/tests/log_test: tests/unit/log_test.c tests/unit/tap.h \
                         dstack-ctld/lib/log.c dstack-ctld/lib/log.h
	@mkdir -p $(@D)
	$(CC) $(C11) -Idstack-ctld -g -O1 $(SANITIZE) -o $@ $(filter %.c,$^) \
	    -ljansson -lpthread

$(BUILD)/tests/file_write_test: tests/unit/file_write_test.c tests/unit/tap.h \
                                dstack-ctld/lib/util.c dstack-ctld/lib/util.h \
                                dstack-ctld/lib/log.c common/parse.c
	@mkdir -p $(@D)
	$(CC) $(C11) -Idstack-ctld -g -O1 $(SANITIZE) -o $@ \
	    $(filter %.c,$^) -ljansson $(OPENSSL_LIBS) -lpthread

# The daemon's: what the server and the node parse from the network, with
# the lib/ (and for the node wg/) sources they use, compiled alike.
CTLD_FUZZ_LIB := $(addprefix dstack-ctld/lib/,log.c util.c validate.c) \
                 $(wildcard common/*.c)
CTLD_FUZZ_HDR := $(wildcard common/*.h dstack-ctld/*/*.h tests/fuzz/*.h)
CTLD_FUZZ_CC  := clang $(C11) -Idstack-ctld -g -O1 \
                 -fsanitize=fuzzer,address,undefined

$(BUILD)/fuzz/fuzz_ctld_query $(BUILD)/fuzz/fuzz_ctld_join: \
$(BUILD)/fuzz/fuzz_ctld_%: tests/fuzz/fuzz_ctld_%.c dstack-ctld/server/api_input.c \
                           $(CTLD_FUZZ_LIB) $(CTLD_FUZZ_HDR)
	@mkdir -p $(@D)
	$(CTLD_FUZZ_CC) -o $@ $(filter %.c,$^) -ljansson $(OPENSSL_LIBS)

$(BUILD)/fuzz/fuzz_ctld_peers $(BUILD)/fuzz/fuzz_ctld_hosts: \
$(BUILD)/fuzz/fuzz_ctld_%: tests/fuzz/fuzz_ctld_%.c dstack-ctld/node/node_peers.c \
                           dstack-ctld/node/node_hosts.c \
                           dstack-ctld/node/node_index.c $(WG_SRC) \
                           $(CTLD_FUZZ_LIB) $(CTLD_FUZZ_HDR)
	@mkdir -p $(@D)
	$(CTLD_FUZZ_CC) $(WG_CFLAGS) -o $@ $(filter %.c,$^) -ljansson \
	    $(OPENSSL_LIBS) $(WG_LIBS)

$(BUILD)/fuzz/fuzz_ctld_dns: tests/fuzz/fuzz_ctld_dns.c \
                           dstack-ctld/node/node_dns_answer.c \
                           dstack-ctld/node/node_names.c \
                           $(CTLD_FUZZ_LIB) $(CTLD_FUZZ_HDR)
	@mkdir -p $(@D)
	$(CTLD_FUZZ_CC) $(WG_CFLAGS) -o $@ $(filter %.c,$^) -lldns -ljansson \
	    $(OPENSSL_LIBS) -lpthread

# The node's peer set, delta by delta, against a full recomputation.
$(BUILD)/tests/node_peers_test: tests/unit/node_peers_test.c tests/unit/tap.h \
                                dstack-ctld/node/node_peers.c \
                                dstack-ctld/node/node_index.c $(WG_SRC) \
                                $(CTLD_FUZZ_LIB) $(CTLD_FUZZ_HDR)
	@mkdir -p $(@D)
	$(CC) $(C11) -Idstack-ctld -g -O1 $(SANITIZE) $(WG_CFLAGS) -o $@ \
	    $(filter %.c,$^) -ljansson $(OPENSSL_LIBS) $(WG_LIBS)

$(BUILD)/fuzz/fuzz_ctld_relay: tests/fuzz/fuzz_ctld_relay.c dstack-ctld/lib/relay_wire.c \
                               $(CTLD_FUZZ_LIB) $(CTLD_FUZZ_HDR)
	@mkdir -p $(@D)
	$(CTLD_FUZZ_CC) -o $@ $(filter %.c,$^) -ljansson $(OPENSSL_LIBS)

# A short run of every fuzzer from its seed corpus; new inputs go to build/.
# Their stderr is closed (-close_fd_mask=2): the daemon's code logs every
# input it refuses; libFuzzer and the sanitizers report on a copy of it.
fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do \
	    name=$${f##*/fuzz_}; mkdir -p $(BUILD)/fuzz/corpus-$$name; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -close_fd_mask=2 \
	        $(BUILD)/fuzz/corpus-$$name tests/fuzz/corpus/$$name \
	        2> $(BUILD)/fuzz/$$name.log \
	    || { tail -40 $(BUILD)/fuzz/$$name.log; exit 1; }; \
	    grep -h 'stat::number_of_executed_units' $(BUILD)/fuzz/$$name.log \
	        | sed "s/^/fuzz $$name: /"; \
	done
