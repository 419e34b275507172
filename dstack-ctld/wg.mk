# The WireGuard layer of dstack-ctld's node role (dstack-ctld/wg/: wg.h,
# the kernel and UAPI backends, netdev.h: rtnetlink) as objects for the
# daemon to link, and the wg-apply test driver built on them.
#
#   WG_OBJS  $(BUILD)/obj/wg/*.o (with the common parsers they use)
#   WG_LIBS  what linking them needs (libnl-3, -genl-3, -route-3)

WG_SRC    := $(sort $(wildcard dstack-ctld/wg/*.c))
WG_OBJS   := $(patsubst dstack-ctld/wg/%.c,$(BUILD)/obj/wg/%.o,$(WG_SRC))
WG_PKGS   := libnl-3.0 libnl-genl-3.0 libnl-route-3.0
WG_CFLAGS := $(shell pkg-config --cflags $(WG_PKGS)) -Idstack-ctld
WG_LIBS   := $(shell pkg-config --libs $(WG_PKGS))
WG_APPLY  := $(BUILD)/tests/wg-apply

.PHONY: wg
all: wg
wg: $(WG_APPLY) $(WG_APPLY)-split

$(BUILD)/obj/wg/%.o: dstack-ctld/wg/%.c
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) $(WG_CFLAGS) -MMD -MP -c -o $@ $<

$(WG_APPLY): tests/wg/wg_apply.c $(WG_OBJS) $(COMMON_OBJ)
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) $(WG_CFLAGS) -MMD -MP $(LDFLAGS) \
	    -o $@ $< $(WG_OBJS) $(COMMON_OBJ) $(WG_LIBS) -lcrypto

# the same with 256-byte netlink messages, for the VM test: a peer with a
# few allowed IPs then spans several messages, which exercises the splitting
$(WG_APPLY)-split: tests/wg/wg_apply.c $(WG_SRC) $(wildcard dstack-ctld/wg/*.h) \
                   $(COMMON_OBJ)
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) $(WG_CFLAGS) -DWG_NL_MSG_SIZE=256 \
	    $(LDFLAGS) -o $@ $(filter %.c %.o,$^) $(WG_LIBS) -lcrypto

-include $(WG_OBJS:.o=.d) $(WG_APPLY).d
