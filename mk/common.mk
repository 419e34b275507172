# Code shared by the module, the daemon and the tools, built once as objects.

COMMON_OBJ := $(addprefix $(BUILD)/obj/common/,app_id.o parse.o ratls.o)

$(BUILD)/obj/common/%.o: common/%.c common/*.h
	@mkdir -p $(@D)
	$(CC) $(C11) $(CFLAGS) -fPIC -c -o $@ $<
