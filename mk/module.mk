# The nginx module, built as a dynamic module against Debian's nginx-dev tree
# (headers and build scripts of the installed /usr/sbin/nginx).  The tree is
# configured once, with Debian's own flags, into build/nginx; later builds
# only recompile what changed.

NGX_SRC      ?= /usr/share/nginx/src
NGX_TREE     := $(BUILD)/nginx-src
NGX_OBJS     := $(BUILD)/nginx
MODULE_SO    := $(NGX_OBJS)/ngx_http_dstack_mesh_module.so

# nginx's own flags already hold -W -Wall -Werror; keep -Wextra explicit
NGX_CC_OPT   := -g -O2 -fPIC -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
                -Wall -Wextra -Werror -Wno-unused-parameter

all: module

.PHONY: module
module: $(NGX_OBJS)/Makefile
	$(MAKE) -s -C $(NGX_TREE) -f $(NGX_OBJS)/Makefile modules

$(NGX_OBJS)/Makefile: config auto/config
	rm -rf $(NGX_TREE) $(NGX_OBJS)
	mkdir -p $(BUILD)
	cp -r $(NGX_SRC) $(NGX_TREE)
	cd $(NGX_TREE) && . ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" \
	    --with-cc-opt="$(NGX_CC_OPT)" --builddir=$(NGX_OBJS) \
	    --add-dynamic-module=$(ROOT) > $(BUILD)/nginx-configure.log \
	    || { tail -20 $(BUILD)/nginx-configure.log; exit 1; }
