# dstack-ctld: the control daemon (server role, admin CLI; node role later).
# Every .c in dstack-ctld/ is part of the one binary; the WireGuard layer
# (dstack-ctld/wg.mk) is compiled with libnl's flags and linked in.

CTLD_SRC  := $(filter-out $(WG_SRC),$(sort $(wildcard dstack-ctld/*.c)))
CTLD_OBJ  := $(patsubst dstack-ctld/%.c,$(BUILD)/obj/ctld/%.o,$(CTLD_SRC))
CTLD_LIBS := -lmicrohttpd -lsqlite3 -ljansson -lcurl $(OPENSSL_LIBS) -lpthread

.PHONY: ctld
all: ctld
ctld: $(BIN)/dstack-ctld

$(BIN)/dstack-ctld: $(CTLD_OBJ) $(WG_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CTLD_LIBS) $(WG_LIBS)

$(BUILD)/obj/ctld/%.o: dstack-ctld/%.c
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) -MMD -MP -c -o $@ $<

-include $(CTLD_OBJ:.o=.d)
