# The WireGuard layer of dstack-ctld's node role (wg.h: kernel and UAPI
# backends, netdev.h: rtnetlink) as objects for the daemon to link, and the
# wg-apply test driver built on them.
#
#   WG_SRC   the sources, which dstack-ctld/build.mk must leave out of its
#            own dstack-ctld/*.c
#   WG_OBJS  $(BUILD)/obj/wg/*.o
#   WG_LIBS  what linking them needs (libnl-3, -genl-3, -route-3)

WG_SRC    := $(addprefix dstack-ctld/,wg.c wg_kernel.c wg_uapi.c netdev.c)
WG_OBJS   := $(patsubst dstack-ctld/%.c,$(BUILD)/obj/wg/%.o,$(WG_SRC))
WG_PKGS   := libnl-3.0 libnl-genl-3.0 libnl-route-3.0
WG_CFLAGS := $(shell pkg-config --cflags $(WG_PKGS))
WG_LIBS   := $(shell pkg-config --libs $(WG_PKGS))
WG_APPLY  := $(BUILD)/tests/wg-apply

.PHONY: wg
all: wg
wg: $(WG_APPLY) $(WG_APPLY)-split

$(BUILD)/obj/wg/%.o: dstack-ctld/%.c
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) $(WG_CFLAGS) -MMD -MP -c -o $@ $<

$(WG_APPLY): tests/wg/wg_apply.c $(WG_OBJS)
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) $(WG_CFLAGS) -Idstack-ctld -MMD -MP $(LDFLAGS) \
	    -o $@ $< $(WG_OBJS) $(WG_LIBS) -lcrypto

# the same with 256-byte netlink messages, for the VM test: a peer with a
# few allowed IPs then spans several messages, which exercises the splitting
$(WG_APPLY)-split: tests/wg/wg_apply.c $(WG_SRC) \
                   $(addprefix dstack-ctld/,wg.h wg_backend.h netdev.h)
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) $(WG_CFLAGS) -DWG_NL_MSG_SIZE=256 -Idstack-ctld \
	    $(LDFLAGS) -o $@ $(filter %.c,$^) $(WG_LIBS) -lcrypto

-include $(WG_OBJS:.o=.d) $(WG_APPLY).d
