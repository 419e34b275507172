# dstack-agent-sim, the guest-agent simulator (tools/agent-sim/README.md).

AGENT_SIM      := $(BIN)/dstack-agent-sim
AGENT_SIM_SRC  := $(wildcard tools/agent-sim/*.c)
AGENT_SIM_OBJ  := $(patsubst tools/agent-sim/%.c,$(BUILD)/obj/agent-sim/%.o,\
                    $(AGENT_SIM_SRC))
AGENT_SIM_LIBS := -lmicrohttpd -ljansson $(OPENSSL_LIBS)

.PHONY: agent-sim
all: agent-sim
agent-sim: $(AGENT_SIM)

$(AGENT_SIM): $(AGENT_SIM_OBJ) $(COMMON_OBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -pthread -o $@ $^ $(AGENT_SIM_LIBS)

$(BUILD)/obj/agent-sim/%.o: tools/agent-sim/%.c tools/agent-sim/*.h \
                            common/*.h
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) -pthread -c -o $@ $<
