# dstack-ctld: the control daemon, one binary for every role.  Sources by
# folder: lib/ (both roles), server/, node/, cli/, main.c; the WireGuard
# layer (wg/, dstack-ctld/wg.mk) is compiled with libnl's flags and linked
# in.  Includes are written from dstack-ctld/ ("lib/log.h"), so a file
# names the folder of every header it uses.

CTLD_SRC  := dstack-ctld/main.c \
             $(sort $(wildcard $(addprefix dstack-ctld/,$(addsuffix /*.c,lib server node cli))))
CTLD_OBJ  := $(patsubst dstack-ctld/%.c,$(BUILD)/obj/ctld/%.o,$(CTLD_SRC)) \
             $(COMMON_OBJ)
CTLD_LIBS := -lmicrohttpd -lsqlite3 -ljansson -lcurl -lhttp_parser -lnftables -lldns $(OPENSSL_LIBS) \
             -lpthread
CTLD_CFLAGS := -Idstack-ctld

.PHONY: ctld
all: ctld
ctld: $(BIN)/dstack-ctld

$(BIN)/dstack-ctld: $(CTLD_OBJ) $(WG_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CTLD_LIBS) $(WG_LIBS)

$(BUILD)/obj/ctld/%.o: dstack-ctld/%.c
	@mkdir -p $(@D)
	$(CC) $(C11) $(CTLD_CFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(CTLD_OBJ:.o=.d)

# The daemon with AddressSanitizer and UndefinedBehaviorSanitizer, for the
# tests that stop it under load (tests/ctld-08-failures.t builds it with
# `make ctld-asan`); one compiler run, not part of `make`.
CTLD_ASAN := $(BUILD)/asan/dstack-ctld

.PHONY: ctld-asan
ctld-asan: $(CTLD_ASAN)

$(CTLD_ASAN): $(CTLD_SRC) $(WG_SRC) $(wildcard dstack-ctld/*/*.h common/*.[ch])
	@mkdir -p $(@D)
	$(CC) $(C11) $(CTLD_CFLAGS) $(WG_CFLAGS) -O1 -g -fno-omit-frame-pointer \
	    -fsanitize=address,undefined -fno-sanitize-recover=all $(LDFLAGS) \
	    -o $@ $(CTLD_SRC) $(WG_SRC) $(COMMON_OBJ:$(BUILD)/obj/%.o=%.c) \
	    $(CTLD_LIBS) $(WG_LIBS)
