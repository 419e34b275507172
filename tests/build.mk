# C unit tests (TAP on stdout, run by prove) and libFuzzer targets, both with
# AddressSanitizer and UndefinedBehaviorSanitizer.

SANITIZE     := -fsanitize=address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=all
UNIT_TESTS   := $(BUILD)/tests/ratls_test $(BUILD)/tests/mesh_target_test \
                $(BUILD)/tests/parse_test
FUZZERS      := $(BUILD)/fuzz/fuzz_ratls $(BUILD)/fuzz/fuzz_mesh_target
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

# A short run of every fuzzer from its seed corpus; new inputs go to build/.
fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do \
	    name=$${f##*/fuzz_}; mkdir -p $(BUILD)/fuzz/corpus-$$name; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        $(BUILD)/fuzz/corpus-$$name tests/fuzz/corpus/$$name \
	        2> $(BUILD)/fuzz/$$name.log \
	    || { tail -40 $(BUILD)/fuzz/$$name.log; exit 1; }; \
	    grep -h 'stat::number_of_executed_units' $(BUILD)/fuzz/$$name.log \
	        | sed "s/^/fuzz $$name: /"; \
	done
